"""Which nodes hold which keys.

A key belongs to partition ``hash(key) mod P``. A partition's replicas are the ``RF`` members with
the highest rendezvous score ``hash(partition, member)``. Adding or removing one member of N changes
the replica sets of only about RF/N of the partitions, and the order among the rest stays the same.
"""

from __future__ import annotations

import hashlib

from kvnode.core.membership import Membership


def partition_of(key: bytes, partitions: int) -> int:
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % partitions


def _score(partition: int, member_id: str) -> bytes:
    return hashlib.blake2b(partition.to_bytes(4, "big") + member_id.encode(), digest_size=8).digest()


def rendezvous(partitions: int, members: tuple[str, ...], rf: int) -> list[tuple[str, ...]]:
    """For each partition, its replicas in preference order."""
    count = min(rf, len(members))
    return [
        tuple(sorted(members, key=lambda m, p=p: _score(p, m), reverse=True)[:count])  # type: ignore[misc]
        for p in range(partitions)
    ]


class Placement:
    """The replica sets of a membership; immutable, built once per membership."""

    def __init__(self, membership: Membership) -> None:
        self.membership = membership
        self.partitions = membership.partitions
        rf = membership.replication_factor
        self.old = rendezvous(self.partitions, membership.old_view, rf)
        self.new = (
            rendezvous(self.partitions, membership.new_view, rf) if membership.in_transition else self.old
        )
        # The one node that holds every partition alone (a single-node store), else None: writes
        # then need no quorum tracking at all.
        holders = {member for replicas in (*self.old, *self.new) for member in replicas}
        self.sole_replica = next(iter(holders)) if len(holders) == 1 else None

    def partition(self, key: bytes) -> int:
        return partition_of(key, self.partitions)

    def read_replicas(self, partition: int) -> tuple[str, ...]:
        return self.old[partition]

    def write_sets(self, partition: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The old and new replica sets; a write needs a quorum of each (they are equal outside a
        membership transition)."""
        return self.old[partition], self.new[partition]

    def owned(self, node_id: str) -> list[int]:
        """Partitions this node serves reads for."""
        return [p for p, reps in enumerate(self.old) if node_id in reps]

    def held(self, node_id: str) -> list[int]:
        """Partitions this node keeps data for: old or new replica sets."""
        return [p for p in range(self.partitions) if node_id in self.old[p] or node_id in self.new[p]]

    def gained(self, node_id: str) -> list[int]:
        """Partitions this node must receive in the current transition."""
        return [p for p in range(self.partitions) if node_id in self.new[p] and node_id not in self.old[p]]

    def lost(self, node_id: str) -> list[int]:
        """Partitions this node hands over in the current transition."""
        return [p for p in range(self.partitions) if node_id in self.old[p] and node_id not in self.new[p]]

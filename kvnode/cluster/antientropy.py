"""Anti-entropy: replicas compare partition digests and copy each other what differs.

Each node keeps, per partition, the XOR of a hash of every record it holds, updated in the same
transaction as the record, so asking for digests costs one small read. A round sends each peer the
list of partitions the two share, and for every partition whose digest differs it compares the two
(key, version) lists and copies records both ways: the newer version wins. This converges replicas
even when every hint was lost.

Tombstones older than the collection horizon are neither sent nor taken: each side drops them on
its own schedule, and copying them back would only undo that.

A record that fails its check is neither listed nor sent (the storage leaves it out), so the peer's
copy looks newer and is pulled over it. The digest it was written with would hide it, though, until
the scrub (``kvnode.cluster.scrub``) recomputes the digest from the intact records.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from kvnode.cluster.clock import HybridClock, from_ms, physical_ms
from kvnode.cluster.replica import KeyVersionEntry, RemoteReplica, Replica
from kvnode.cluster.roster import Roster
from kvnode.cluster.topology import Topology
from kvnode.core.records import Record, Version, chunked
from kvnode.metrics import NodeMetrics
from kvnode.storage.engine import Storage

log = logging.getLogger(__name__)

PAGE = 1000
READ_PAGE = 64  # values can be 1 MiB each: keep a read's answer well inside one message


@dataclass
class RoundStats:
    compared: int = 0
    differing: int = 0
    pushed: int = 0
    pulled: int = 0


async def all_key_versions(replica: Replica, partition: int) -> dict[bytes, tuple[Version, bool]]:
    """Every (key -> version, tombstone) a replica holds in a partition."""
    out: dict[bytes, tuple[Version, bool]] = {}
    after = b""
    while True:
        page: list[KeyVersionEntry]
        page, exhausted = await replica.key_versions(partition, after, PAGE)
        out.update((key, (version, tomb)) for key, version, tomb in page)
        if exhausted or not page:
            return out
        after = page[-1][0]


class AntiEntropy:
    """Rounds of digest comparison with every peer this node shares partitions with, and the
    tombstone horizon that both anti-entropy and transfers respect."""

    def __init__(
        self,
        node_id: str,
        storage: Storage,
        roster: Roster,
        topology: Topology,
        clock: HybridClock,
        metrics: NodeMetrics,
        *,
        tombstone_grace: float,
    ) -> None:
        self._node_id = node_id
        self._storage = storage
        self._roster = roster
        self._topology = topology
        self._clock = clock
        self._metrics = metrics
        self._grace_ms = int(tombstone_grace * 1000)

    def horizon(self) -> int:
        """Tombstones older than this timestamp may be collected."""
        return from_ms(physical_ms(self._clock.wall()) - self._grace_ms)

    async def run_round(self) -> RoundStats:
        """Compare with every peer that shares a partition with this node; repair what differs."""
        stats = await self.compare(self._topology.placement.held(self._node_id))
        self._metrics.ae_rounds.inc()
        return stats

    async def compare(self, partitions: Iterable[int]) -> RoundStats:
        """Compare these partitions' digests with every peer that shares them; repair what differs.
        (The scrub calls it for the partitions where it found damage.)"""
        stats = RoundStats()
        placement = self._topology.placement
        shared: dict[str, list[int]] = {}
        for p in partitions:
            old, new = placement.write_sets(p)
            for peer in dict.fromkeys(old + new):
                if peer != self._node_id:
                    shared.setdefault(peer, []).append(p)
        for peer_id, partitions in shared.items():
            link = self._roster.peer(peer_id)
            if link is None:
                continue
            try:
                await self._compare(link, partitions, stats)
            except Exception as exc:  # noqa: BLE001 - one unreachable peer must not stop the round
                log.debug("anti-entropy with %s skipped: %s", peer_id, exc)
        return stats

    async def _compare(self, link: RemoteReplica, partitions: list[int], stats: RoundStats) -> None:
        remote = await link.digests(partitions)
        local = self._storage.digests(partitions)
        stats.compared += len(partitions)
        differing = [
            p
            for (p, digest, count), (_, r_digest, r_count) in zip(local, remote, strict=True)
            if digest != r_digest or count != r_count
        ]
        stats.differing += len(differing)
        self._metrics.ae_partitions_differing.inc(len(differing))
        for p in differing:
            pushed, pulled = await self.sync_partition(p, link)
            stats.pushed += pushed
            stats.pulled += pulled

    async def sync_partition(self, partition: int, link: RemoteReplica) -> tuple[int, int]:
        """Make this node and ``link`` hold the newest version of every key in the partition."""
        remote = await all_key_versions(link, partition)
        local = await all_key_versions(self._roster.local, partition)
        horizon = self.horizon()

        def wanted(
            mine: dict[bytes, tuple[Version, bool]], theirs: dict[bytes, tuple[Version, bool]]
        ) -> list[bytes]:
            return [
                key
                for key, (version, tomb) in mine.items()
                if not (tomb and version.hlc < horizon)
                and ((other := theirs.get(key)) is None or other[0] < version)
            ]

        push, pull = wanted(local, remote), wanted(remote, local)
        for start in range(0, len(push), READ_PAGE):
            found = self._storage.get_many(push[start : start + READ_PAGE])
            records = [r for r in found if isinstance(r, Record)]  # never spread a corrupt copy
            for chunk in chunked(records):
                await link.apply([(r, False) for r in chunk], repair=True)
        for start in range(0, len(pull), READ_PAGE):
            fetched = [r for r in await link.read(pull[start : start + READ_PAGE]) if isinstance(r, Record)]
            await self._roster.local.apply([(r, False) for r in fetched], repair=True)
        self._metrics.ae_repairs.labels("push").inc(len(push))
        self._metrics.ae_repairs.labels("pull").inc(len(pull))
        if push or pull:
            log.info(
                "anti-entropy partition %d with %s: pushed %d, pulled %d",
                partition,
                link.id,
                len(push),
                len(pull),
            )
        return len(push), len(pull)

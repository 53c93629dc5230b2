"""What a coordinator asks of a replica, whether it is this node's own store or a peer.

Both kinds offer the same calls (:class:`Replica`), so the coordinator, anti-entropy, hints and
transfers never special-case this node beyond a fast path.
"""

from __future__ import annotations

from typing import Protocol

from kvnode.api.v1 import types_pb2
from kvnode.core.errors import Unavailable
from kvnode.core.records import Record, Version
from kvnode.storage.ops import ApplyOutcome, ApplyResult
from kvnode.storage.schema import Corrupt

ApplyItem = tuple[Record, bool]
"""A record to store, and whether to return the record it replaces."""
KeyVersionEntry = tuple[bytes, Version, bool]
"""A key, its version and whether it is a tombstone: what anti-entropy compares."""
ReadAnswer = Record | Corrupt | None
"""A replica's answer for one key: its record, Corrupt when its copy failed its check (it is not
served: the coordinator asks another replica and repairs this one), or None when it has none."""

__all__ = [
    "ApplyItem",
    "ApplyOutcome",
    "ApplyResult",
    "Corrupt",
    "KeyVersionEntry",
    "ReadAnswer",
    "RemoteReplica",
    "Replica",
    "StaleEpoch",
]


class StaleEpoch(Unavailable):
    """The peer holds a newer membership and did not carry out the request."""


class Replica(Protocol):
    """A replica as the coordinator, anti-entropy, hints and transfers see it."""

    id: str

    @property
    def healthy(self) -> bool: ...

    async def apply(self, items: list[ApplyItem], *, repair: bool = False) -> list[ApplyResult]: ...

    async def read(self, keys: list[bytes], max_bytes: int | None = None) -> list[ReadAnswer]:
        """Each key's record; with ``max_bytes``, a read whose records add up to more is refused
        (:class:`~kvnode.storage.engine.OverBudget`) before they are loaded."""
        ...

    async def scan(
        self, start: bytes, end: bytes, prefix: bytes, limit: int, keys_only: bool
    ) -> tuple[list[Record], bool]: ...

    async def digests(self, partitions: list[int]) -> list[tuple[int, bytes, int]]: ...

    async def key_versions(
        self, partition: int, after: bytes, limit: int
    ) -> tuple[list[KeyVersionEntry], bool]: ...

    async def fetch_partition(
        self, partition: int, after: bytes, limit: int
    ) -> tuple[list[Record], bool]: ...


class RemoteReplica(Replica, Protocol):
    """Another member, reached over the network (:class:`~kvnode.cluster.links.PeerLink`)."""

    address: str
    reachable: bool
    last_seen: float
    """``time.monotonic()`` of its last answer; 0 before the first."""

    async def membership(self) -> types_pb2.Membership: ...

    async def close(self) -> None: ...

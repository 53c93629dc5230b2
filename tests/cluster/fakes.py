"""Fake peers for the cluster unit tests: honest replicas over an in-memory dict.

A :class:`FakePeer` implements :class:`~kvnode.cluster.replica.RemoteReplica` (mypy checks it where
the roster takes one) with the rules a real replica keeps: the newest version wins, partitions and
digests are computed the way the storage engine computes them, and a coordinated request (not a
repair) planned under an older epoch than the peer holds is refused with :class:`StaleEpoch` after
the caller adopted the newer membership, as :class:`~kvnode.cluster.links.PeerLink` does. Tests
make it fail, stall or lie, and read back the calls it got.

It models no clock exchange, so what a test sees about versions comes from the code under test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kvnode.api.v1 import types_pb2
from kvnode.cluster.replica import ApplyItem, ApplyResult, Corrupt, KeyVersionEntry, ReadAnswer, StaleEpoch
from kvnode.core.errors import KVError, Unavailable
from kvnode.core.membership import Membership
from kvnode.core.placement import partition_of
from kvnode.core.records import Record, Version
from kvnode.storage.engine import OverBudget
from kvnode.storage.schema import record_hash

Adopt = Callable[[types_pb2.Membership], Awaitable[None]]


@dataclass(frozen=True)
class Call:
    """One call a fake peer received: what it was asked for, not what it answered."""

    method: str
    keys: tuple[bytes, ...] = ()
    partitions: tuple[int, ...] = ()
    repair: bool = False


class FakePeer:
    """Another member, in memory. ``held`` is the membership it holds: a newer epoch than the
    caller's makes it refuse coordinated requests, the way a real replica does."""

    def __init__(
        self,
        member_id: str,
        address: str,
        *,
        partitions: int,
        held: Membership,
        epoch: Callable[[], int],
        adopt: Adopt,
    ) -> None:
        self.id = member_id
        self.address = address
        self.reachable = True
        self.last_seen = 0.0
        self.held = held
        self.records: dict[bytes, Record] = {}
        self.calls: list[Call] = []
        self.lossy: set[bytes] = set()
        """Keys it acknowledges and then does not keep: a replica that lies."""
        self.overtaken: set[bytes] = set()
        """Keys that a concurrent write from another coordinator reaches first: just before each
        apply of one, a copy of it one clock tick newer is stored here."""
        self.corrupt: set[bytes] = set()
        """Keys whose copy here fails its check: reads answer Corrupt, pages leave them out, and
        any version replaces them, as on a real replica. (Its digest still counts them, as a real
        replica's does until its scrub.)"""
        self.closed = False
        self._partitions = partitions
        self._epoch = epoch
        self._adopt = adopt
        self._failure: KVError | None = None
        self._release: asyncio.Event | None = None
        self._answering = 0
        self._quiet = asyncio.Event()  # no call in progress
        self._quiet.set()

    # -- faults ------------------------------------------------------------------------------

    def fail(self, error: KVError | None = None) -> None:
        """Answer every call from now on with ``error`` (a network failure by default)."""
        self._failure = error or Unavailable(f"peer {self.id}: connection refused")

    def stall(self) -> None:
        """Hold every call from now on without an answer until :meth:`recover`."""
        if self._release is None:
            self._release = asyncio.Event()

    def recover(self) -> None:
        """Answer normally again, releasing the stalled calls."""
        self._failure = None
        if self._release is not None:
            self._release.set()
            self._release = None

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until no call is in progress (stalled calls must have been released)."""
        await asyncio.wait_for(self._quiet.wait(), timeout)

    # -- what a test reads back ----------------------------------------------------------------

    def store(self, *records: Record) -> None:
        """Give it records, as if written earlier (newest version wins)."""
        for rec in records:
            self._keep(rec)

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    # -- RemoteReplica -------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self.reachable

    async def apply(self, items: list[ApplyItem], *, repair: bool = False) -> list[ApplyResult]:
        await self._answer(
            Call("apply", tuple(r.key for r, _ in items), repair=repair), coordinated=not repair
        )
        outcomes: list[ApplyResult] = []
        for record, want_previous in items:
            if record.key in self.overtaken:
                rival = Version(record.version.hlc + 1, "rival")
                self._keep(record._replace(value=b"overtaking", version=rival))
            previous = self.records.get(record.key) if want_previous else None
            applied = record.key in self.lossy or self._keep(record)
            outcomes.append((applied, previous))
        return outcomes

    async def read(self, keys: list[bytes], max_bytes: int | None = None) -> list[ReadAnswer]:
        await self._answer(Call("read", tuple(keys)), coordinated=True)
        if max_bytes is not None:
            size = sum(len(r.key) + len(r.value) for k in keys if (r := self.records.get(k)) is not None)
            if size > max_bytes:
                raise OverBudget(size, max_bytes)
        return [Corrupt(k, "damaged") if k in self.corrupt else self.records.get(k) for k in keys]

    async def scan(
        self, start: bytes, end: bytes, prefix: bytes, limit: int, keys_only: bool
    ) -> tuple[list[Record], bool]:
        await self._answer(Call("scan"), coordinated=True)
        first = max(start, prefix)
        keys = [
            k
            for k in sorted(self.records)
            if k >= first and (not end or k < end) and k.startswith(prefix) and k not in self.corrupt
        ]
        page = [self.records[k] for k in keys[:limit]]
        return [r._replace(value=b"") for r in page] if keys_only else page, len(keys) <= limit

    async def digests(self, partitions: list[int]) -> list[tuple[int, bytes, int]]:
        await self._answer(Call("digests", partitions=tuple(partitions)), coordinated=False)
        out = []
        for p in partitions:
            held = self._in_partition(p, intact=False)
            digest = 0
            for rec in held:
                digest ^= record_hash(rec.key, rec.version, rec.tombstone)
            out.append((p, digest.to_bytes(16, "big"), len(held)))
        return out

    async def key_versions(
        self, partition: int, after: bytes, limit: int
    ) -> tuple[list[KeyVersionEntry], bool]:
        await self._answer(Call("key_versions", partitions=(partition,)), coordinated=False)
        held = [r for r in self._in_partition(partition) if r.key > after]
        return [(r.key, r.version, r.tombstone) for r in held[:limit]], len(held) <= limit

    async def fetch_partition(self, partition: int, after: bytes, limit: int) -> tuple[list[Record], bool]:
        await self._answer(Call("fetch_partition", partitions=(partition,)), coordinated=False)
        held = [r for r in self._in_partition(partition) if r.key > after]
        return held[:limit], len(held) <= limit

    async def membership(self) -> types_pb2.Membership:
        await self._answer(Call("membership"), coordinated=False)
        return self.held.to_proto()

    async def close(self) -> None:
        self.closed = True

    # -- internals -----------------------------------------------------------------------------

    async def _answer(self, call: Call, *, coordinated: bool) -> None:
        """Record the call, then stall, fail or refuse it as the test set the peer up to."""
        self.calls.append(call)
        self._answering += 1
        self._quiet.clear()
        try:
            release = self._release
            if release is not None:
                await release.wait()
            if self._failure is not None:
                self.reachable = False
                raise self._failure
            self.reachable = True
            self.last_seen = time.monotonic()
            if coordinated and self._epoch() < self.held.epoch:
                await self._adopt(self.held.to_proto())
                raise StaleEpoch(f"peer {self.id} has membership epoch {self.held.epoch}")
        finally:
            self._answering -= 1
            if not self._answering:
                self._quiet.set()

    def _keep(self, record: Record) -> bool:
        """As a replica stores a record: True when it holds this record now (stored, or already
        held), False when a newer version of the key superseded it."""
        stored = self.records.get(record.key)
        if record.key in self.corrupt:  # a corrupt copy counts as absent
            self.corrupt.discard(record.key)
            stored = None
        if stored is not None and stored.version >= record.version:
            return stored.version == record.version
        self.records[record.key] = record
        return True

    def _in_partition(self, partition: int, *, intact: bool = True) -> list[Record]:
        return [
            self.records[k]
            for k in sorted(self.records)
            if partition_of(k, self._partitions) == partition and not (intact and k in self.corrupt)
        ]


class RecordingHints:
    """A :class:`~kvnode.cluster.coordinator.HintSink` that keeps what it is given, in order."""

    def __init__(self) -> None:
        self.deferred: list[tuple[str, list[Record]]] = []

    def defer(self, target: str, records: list[Record]) -> None:
        self.deferred.append((target, list(records)))

    def targets(self) -> set[str]:
        return {target for target, _ in self.deferred}

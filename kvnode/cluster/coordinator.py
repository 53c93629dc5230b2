"""Coordinating reads and writes across a key's replicas.

Writes go to every replica at once and succeed when enough have made them durable: a quorum of
the old replica set and of the new one during a membership transition. Replicas that fail get the
write as a hint. Reads ask as few replicas as the level needs (this node first), ask more when one
fails or stalls, return the newest version, and repair the stale replicas they saw.

LINEARIZABLE is the ABD quorum register: a write first reads the newest version from a quorum and
writes above it; a read makes sure a quorum holds what it returns before it returns.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kvnode import failpoints
from kvnode.cluster.batching import InFlight
from kvnode.cluster.clock import HybridClock
from kvnode.cluster.replica import ApplyItem, ApplyOutcome, StaleEpoch
from kvnode.cluster.roster import Roster
from kvnode.cluster.topology import Topology
from kvnode.core.errors import KVError, StorageFull, Unavailable
from kvnode.core.levels import Level, single_key_only
from kvnode.core.placement import Placement
from kvnode.core.records import Record, Version, newest
from kvnode.metrics import NodeMetrics

log = logging.getLogger(__name__)

ATTEMPTS = 3
SPECULATE_AFTER = 0.25
# Failpoint (tests only, see kvnode.failpoints): acknowledge writes at once, replicate them this
# many seconds later. None in every real run.
ACK_BEFORE_REPLICATION = failpoints.duration("ack-before-replication")


class HintSink(Protocol):
    def defer(self, target: str, records: list[Record]) -> None: ...


@dataclass(eq=False)
class _WriteTracker:
    """Counts one record's acknowledgements against both replica sets."""

    old: tuple[str, ...]
    new: tuple[str, ...]
    need_old: int
    need_new: int
    future: asyncio.Future[bool]
    acked_old: int = 0
    acked_new: int = 0
    failed_old: int = 0
    failed_new: int = 0
    stale: bool = False
    previous: Record | None = None
    full: StorageFull | None = None

    def ack(self, node: str, previous: Record | None) -> None:
        self.acked_old += node in self.old
        self.acked_new += node in self.new
        if previous is not None and (self.previous is None or previous.version > self.previous.version):
            self.previous = previous
        self._check()

    def fail(self, node: str, error: BaseException) -> None:
        self.failed_old += node in self.old
        self.failed_new += node in self.new
        self.stale |= isinstance(error, StaleEpoch)
        if isinstance(error, StorageFull):
            self.full = error
        self._check()

    def _check(self) -> None:
        """Succeed as soon as both quorums are in. Fail only once every replica has answered, so
        that the error reports the true count."""
        if self.acked_old >= self.need_old and self.acked_new >= self.need_new:
            _settle(self.future, True)
        elif self.acked_old + self.failed_old == len(self.old) and self.acked_new + self.failed_new == len(
            self.new
        ):
            _settle(self.future, False)

    def error(self, level: Level, prefix: str = "") -> KVError:
        """Why the write failed: a replica's full disk is reported as such, else too few acks."""
        if self.full is not None:
            return StorageFull(f"{prefix}{self.describe(level)}: {self.full.message}")
        return Unavailable(prefix + self.describe(level))

    def describe(self, level: Level) -> str:
        if self.old == self.new:
            return (
                f"{level.name} write: {self.acked_old} of {len(self.old)} replicas acknowledged, "
                f"{self.need_old} needed"
            )
        return (
            f"{level.name} write during a membership change: {self.acked_old} of {len(self.old)} old "
            f"replicas and {self.acked_new} of {len(self.new)} new replicas acknowledged, "
            f"{self.need_old} and {self.need_new} needed"
        )


@dataclass(eq=False)
class _ReadTracker:
    """Collects one key's answers from its replicas, in preference order."""

    candidates: list[str]
    need: int
    answers: dict[str, Record | None] = field(default_factory=dict)
    outstanding: set[str] = field(default_factory=set)
    tried: int = 0
    stale: bool = False

    @property
    def done(self) -> bool:
        return len(self.answers) >= self.need

    @property
    def hopeless(self) -> bool:
        return len(self.answers) + len(self.outstanding) + len(self.candidates) - self.tried < self.need

    def take(self, extra: int = 0) -> list[str]:
        """Replicas to ask now: enough to reach ``need`` plus ``extra``, never one twice."""
        short = self.need - len(self.answers) - len(self.outstanding) + extra
        picked = self.candidates[self.tried : self.tried + max(short, 0)]
        self.tried += len(picked)
        self.outstanding.update(picked)
        return picked


def _ignore_result(task: asyncio.Task[list[Record | None]]) -> None:
    if not task.cancelled():
        task.exception()


def _settle(future: asyncio.Future[bool], ok: bool) -> None:
    if not future.done():
        future.set_result(ok)


@dataclass(frozen=True)
class WriteResult:
    version: Version
    previous: Record | None


class Coordinator:
    """Carries out client reads and writes for any key: it plans each request on the current
    placement (under one membership epoch), sends it to the key's replicas (answering inline when
    this node is one), counts the answers against the level, hints the replicas a write missed and
    repairs the stale ones a read saw."""

    def __init__(
        self,
        node_id: str,
        topology: Topology,
        roster: Roster,
        clock: HybridClock,
        hints: HintSink,
        metrics: NodeMetrics,
        *,
        timeout: float,
        in_flight: InFlight | None = None,
    ) -> None:
        self.node_id = node_id
        self.topology = topology
        self.roster = roster
        self.clock = clock
        self.hints = hints
        self.metrics = metrics
        self.timeout = timeout
        self.in_flight = in_flight or InFlight()
        self._background: set[asyncio.Task[object]] = set()

    # -- public operations -------------------------------------------------------------------

    async def write(
        self, key: bytes, value: bytes, *, tombstone: bool, level: Level, want_previous: bool
    ) -> WriteResult:
        """A put (or, with ``tombstone``, a delete) of one key."""
        if level is Level.LINEARIZABLE:
            current = (await self.read([key], Level.QUORUM))[0]
            if current is not None:
                self.clock.observe(current.version.hlc)
        record = Record(key, b"" if tombstone else value, Version(self.clock.now(), self.node_id), tombstone)
        if ACK_BEFORE_REPLICATION is not None and level is not Level.LINEARIZABLE:
            self._spawn(self._replicate_later(record, level, ACK_BEFORE_REPLICATION))
            return WriteResult(record.version, None)
        with self.topology.request() as placement:
            old, new = placement.write_sets(placement.partition(key))
            if old == new == (self.node_id,):  # this node is the only replica: no tracking needed
                ((_, previous),) = await self.roster.local.apply([(record, want_previous)])
                return WriteResult(record.version, previous)
        with self.in_flight:
            tracker = (await self._replicate([(record, want_previous)], level))[0]
        if not tracker.future.result():
            raise tracker.error(level)
        return WriteResult(record.version, tracker.previous)

    async def _replicate_later(self, record: Record, level: Level, delay: float) -> None:
        """The failpoint's broken write: replicate what was already acknowledged."""
        await asyncio.sleep(delay)
        await self._replicate([(record, False)], level)

    async def write_many(self, mutations: Sequence[tuple[bytes, bytes, bool]], level: Level) -> list[Version]:
        """Independent puts and deletes; fails if any mutation misses its level."""
        single_key_only(level, "write batches")
        records = [
            Record(key, b"" if delete else value, Version(self.clock.now(), self.node_id), delete)
            for key, value, delete in mutations
        ]
        with self.in_flight:
            await self.replicate_records(records, level)
        return [r.version for r in records]

    async def replicate_records(self, records: list[Record], level: Level) -> None:
        """Write records with the versions they carry (batches, restores)."""
        with self.topology.request() as placement:
            if placement.sole_replica == self.node_id:  # no other replica: no tracking needed
                await self.roster.local.apply([(r, False) for r in records])
                return
        trackers = await self._replicate([(r, False) for r in records], level)
        failed = [t for t in trackers if not t.future.result()]
        if failed:
            raise failed[0].error(level, f"{len(failed)} of {len(records)} writes failed; first: ")

    async def read(self, keys: list[bytes], level: Level) -> list[Record | None]:
        """The newest record (tombstones included) of each key, from as many replicas as ``level``
        needs. LINEARIZABLE reads make sure a quorum holds the result before returning it."""
        local = self.roster.local
        if len(keys) == 1 and not local.rebuilding:
            placement = self.topology.placement
            replicas = placement.read_replicas(placement.partition(keys[0]))
            if self.node_id in replicas and level.needed(len(replicas)) == 1:
                return local.read_now(keys)  # one answer suffices and this node has it
        with self.in_flight:
            return await self._read_replicas(keys, level)

    async def _read_replicas(self, keys: list[bytes], level: Level) -> list[Record | None]:
        for attempt in range(ATTEMPTS):
            with self.topology.request() as placement:
                trackers = await self._collect(keys, level, placement)
            if all(t.done for t in trackers) or not any(t.stale for t in trackers) or attempt == ATTEMPTS - 1:
                break
        results: list[Record | None] = []
        write_back: list[Record] = []
        for tracker in trackers:
            if not tracker.done:
                raise Unavailable(
                    f"{level.name} read: {len(tracker.answers)} of {len(tracker.candidates)} replicas "
                    f"answered, {tracker.need} needed"
                )
            best = newest(list(tracker.answers.values()))
            results.append(best)
            if best is None:
                continue
            stale = [n for n, rec in tracker.answers.items() if rec is None or rec.version < best.version]
            if stale:
                self._repair(best, stale)
                if level is Level.LINEARIZABLE:
                    write_back.append(best)
        if write_back:
            await self.replicate_records(write_back, Level.QUORUM)
        return results

    # -- writes ------------------------------------------------------------------------------

    async def _replicate(self, items: list[ApplyItem], level: Level) -> list[_WriteTracker]:
        for attempt in range(ATTEMPTS):
            with self.topology.request() as placement:
                trackers = self._send(items, level, placement)
                await asyncio.wait([t.future for t in trackers], timeout=self.timeout + 0.5)
            for t in trackers:
                _settle(t.future, False)
            if all(t.future.result() for t in trackers) or attempt == ATTEMPTS - 1:
                break
            if not any(t.stale for t in trackers):
                break
        return trackers

    def _send(self, items: list[ApplyItem], level: Level, placement: Placement) -> list[_WriteTracker]:
        loop = asyncio.get_running_loop()
        trackers: list[_WriteTracker] = []
        per_target: dict[str, list[int]] = {}
        for i, (record, _) in enumerate(items):
            old, new = placement.write_sets(placement.partition(record.key))
            trackers.append(
                _WriteTracker(old, new, level.needed(len(old)), level.needed(len(new)), loop.create_future())
            )
            for target in dict.fromkeys(old + new):
                per_target.setdefault(target, []).append(i)
        for target, indexes in per_target.items():
            task = loop.create_task(self.roster.get(target).apply([items[i] for i in indexes]))
            task.add_done_callback(functools.partial(self._applied, target, indexes, items, trackers))
        return trackers

    def _applied(
        self,
        target: str,
        indexes: list[int],
        items: list[ApplyItem],
        trackers: list[_WriteTracker],
        task: asyncio.Task[list[ApplyOutcome]],
    ) -> None:
        error = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if error is None:
            for i, (_, previous) in zip(indexes, task.result(), strict=True):
                trackers[i].ack(target, previous)
            return
        for i in indexes:
            trackers[i].fail(target, error)
        if not isinstance(error, StaleEpoch) and target != self.node_id:
            self.hints.defer(target, [items[i][0] for i in indexes])

    # -- reads -------------------------------------------------------------------------------

    async def _collect(self, keys: list[bytes], level: Level, placement: Placement) -> list[_ReadTracker]:
        trackers = [
            _ReadTracker(
                self.roster.preferred(replicas := placement.read_replicas(placement.partition(k))),
                level.needed(len(replicas)),
            )
            for k in keys
        ]
        inflight: dict[asyncio.Task[list[Record | None]], tuple[str, list[int]]] = {}
        self._ask(keys, trackers, range(len(keys)), 0, inflight)
        deadline = asyncio.get_running_loop().time() + self.timeout
        while inflight and not all(t.done or (t.hopeless and not t.outstanding) for t in trackers):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            done, _ = await asyncio.wait(
                inflight, timeout=min(SPECULATE_AFTER, remaining), return_when=asyncio.FIRST_COMPLETED
            )
            waiting = [i for i, t in enumerate(trackers) if not t.done]
            if not done:
                self._ask(keys, trackers, waiting, 1, inflight)
                continue
            for task in done:
                target, indexes = inflight.pop(task)
                error = task.exception()
                for n, i in enumerate(indexes):
                    tracker = trackers[i]
                    tracker.outstanding.discard(target)
                    if error is None:
                        tracker.answers[target] = task.result()[n]
                    else:
                        tracker.stale |= isinstance(error, StaleEpoch)
            self._ask(keys, trackers, waiting, 0, inflight)
        for task in inflight:  # answers no longer needed; don't leave their errors unretrieved
            task.add_done_callback(_ignore_result)
        return trackers

    def _ask(
        self,
        keys: list[bytes],
        trackers: list[_ReadTracker],
        indexes: Iterable[int],
        extra: int,
        inflight: dict[asyncio.Task[list[Record | None]], tuple[str, list[int]]],
    ) -> None:
        """Send each tracker's next requests, one batched call per replica. This node's own store
        answers inline, without a task."""
        per_target: dict[str, list[int]] = {}
        for i in indexes:
            for target in trackers[i].take(extra):
                per_target.setdefault(target, []).append(i)
        local = self.roster.local
        for target, idx in per_target.items():
            wanted = [keys[i] for i in idx]
            if target == local.id and not local.rebuilding:
                for i, record in zip(idx, local.read_now(wanted), strict=True):
                    trackers[i].outstanding.discard(target)
                    trackers[i].answers[target] = record
                continue
            task = asyncio.get_running_loop().create_task(self.roster.get(target).read(wanted))
            inflight[task] = (target, idx)

    def _repair(self, record: Record, stale: list[str]) -> None:
        """Send the newest version to replicas that answered with an older one; don't wait."""
        self.metrics.read_repairs.inc(len(stale))
        for target in stale:
            self._spawn(self.roster.get(target).apply([(record, False)], repair=True))

    async def close(self) -> None:
        """Stop the read repairs still in the background (anti-entropy makes up for them)."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[object, object, object]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[object]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("background repair failed: %s", task.exception())

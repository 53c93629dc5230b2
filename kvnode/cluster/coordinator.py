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
import random
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from kvnode import failpoints
from kvnode.cluster import lingering
from kvnode.cluster.batching import InFlight
from kvnode.cluster.clock import HybridClock
from kvnode.cluster.replica import ApplyItem, ApplyResult, Corrupt, ReadAnswer, StaleEpoch
from kvnode.cluster.roster import Roster
from kvnode.cluster.topology import Topology
from kvnode.core.errors import DataLoss, KVError, Unavailable
from kvnode.core.levels import Level, single_key_only
from kvnode.core.logs import RateLimitedLog
from kvnode.core.placement import Placement
from kvnode.core.records import Record, Version, newest
from kvnode.metrics import NodeMetrics
from kvnode.storage.engine import OverBudget

log = logging.getLogger(__name__)
corruption = RateLimitedLog(log)

ATTEMPTS = 3
SPECULATE_AFTER = 0.25
RESTAMP_PAUSE = 0.005
# A replica's refusal with one of these codes will not change on another try: it is the write's error.
_DEFINITE = frozenset(
    {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL}
)
# Failpoint (tests only, see kvnode.failpoints): acknowledge writes at once, replicate them this
# many seconds later. None in every real run.
ACK_BEFORE_REPLICATION = failpoints.duration("ack-before-replication")


class HintSink(Protocol):
    def defer(self, target: str, records: list[Record]) -> None: ...


@dataclass(eq=False)
class _WriteTracker:
    """Counts one record's acknowledgements against both replica sets.

    A replica acknowledges by holding the record. With ``exact`` (a new QUORUM or ONE write) a
    replica that holds a newer version instead does not: the record it was asked to store is not
    there to be read, and the newer version may come from a write that finished before this one
    began (a clock behind), so counting it would acknowledge a write that no read can return.
    LINEARIZABLE writes, and replays of existing records (restores, LINEARIZABLE write-back), need
    only a version as new: the ABD read phase stamped the write above every write that had finished,
    so a newer version there is a concurrent write, ordered after this one.
    """

    old: tuple[str, ...]
    new: tuple[str, ...]
    need_old: int
    need_new: int
    future: asyncio.Future[bool]
    exact: bool = True
    acked_old: int = 0
    acked_new: int = 0
    failed_old: int = 0
    failed_new: int = 0
    superseded: int = 0
    errors: int = 0
    refusals: int = 0
    stale: bool = False
    previous: Record | None = None
    refused: KVError | None = None

    def ack(self, node: str, applied: bool, previous: Record | None) -> None:
        self.previous = _newer(self.previous, previous)
        if self.exact and not applied:
            self.superseded += 1
            self._count_failure(node)
            return
        self.acked_old += node in self.old
        self.acked_new += node in self.new
        self._check()

    def fail(self, node: str, error: BaseException) -> None:
        self.errors += 1
        self.stale |= isinstance(error, StaleEpoch)
        if isinstance(error, KVError) and error.code in _DEFINITE:
            self.refused = error
            self.refusals += 1
        self._count_failure(node)

    @property
    def lost_race(self) -> bool:
        """Every replica that did not acknowledge holds a newer version: nothing but a concurrent
        write stood in the way, so the same write stamped above it will do."""
        return self.superseded > 0 and not self.errors

    def _count_failure(self, node: str) -> None:
        self.failed_old += node in self.old
        self.failed_new += node in self.new
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
        """Why the write failed. When every replica refused it (a full disk, a record none can
        take) nothing was stored, and the refusal's own status says so. Otherwise some replica may
        hold it, or may still store it: UNAVAILABLE, whose outcome is unknown, with the reason."""
        replicas = len(set(self.old) | set(self.new))
        if self.refused is not None and self.refusals == replicas:
            return _retitled(self.refused, f"{prefix}{self.describe(level)}: ")
        reason = f": {self.refused.message}" if self.refused is not None else ""
        return Unavailable(prefix + self.describe(level) + reason)

    def describe(self, level: Level) -> str:
        superseded = (
            f" ({self.superseded} held a newer version of the key: a concurrent write won there)"
            if self.superseded
            else ""
        )
        if self.old == self.new:
            return (
                f"{level.name} write: {self.acked_old} of {len(self.old)} replicas acknowledged, "
                f"{self.need_old} needed{superseded}"
            )
        return (
            f"{level.name} write during a membership change: {self.acked_old} of {len(self.old)} old "
            f"replicas and {self.acked_new} of {len(self.new)} new replicas acknowledged, "
            f"{self.need_old} and {self.need_new} needed{superseded}"
        )


@dataclass(eq=False)
class _ReadTracker:
    """Collects one key's answers from its replicas, in preference order. A replica whose copy
    failed its check has not answered: another is asked in its place."""

    candidates: list[str]
    need: int
    answers: dict[str, Record | None] = field(default_factory=dict)
    outstanding: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    tried: int = 0
    stale: bool = False

    def answer(self, replica: str, answer: ReadAnswer) -> None:
        self.outstanding.discard(replica)
        if isinstance(answer, Corrupt):
            self.corrupt.add(replica)
        else:
            self.answers[replica] = answer

    def error(self, level: Level) -> KVError:
        """Why the read failed. DATA_LOSS when every replica answered and too few copies were
        intact: asking again cannot help until they are repaired."""
        if not self.corrupt:
            return Unavailable(
                f"{level.name} read: {len(self.answers)} of {len(self.candidates)} replicas answered, "
                f"{self.need} needed"
            )
        answered = (
            f"{len(self.answers)} of {len(self.candidates)} replicas answered with an intact copy and "
            f"{len(self.corrupt)} with a copy that failed its checksum; {self.need} needed"
        )
        if len(self.answers) + len(self.corrupt) == len(self.candidates):
            return DataLoss(f"{level.name} read: {answered}, so nothing was served")
        return Unavailable(f"{level.name} read: {answered}")

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


def _ignore_result(task: asyncio.Task[list[ReadAnswer]]) -> None:
    if not task.cancelled():
        task.exception()


Failure = tuple[int, KVError, bool]
"""A record that missed its level: its index, why, and whether a newer version alone stood in the way."""


def _superseded(level: Level) -> KVError:
    return Unavailable(f"{level.name} write: a newer version of the key is stored (a concurrent write won)")


def _newer(a: Record | None, b: Record | None) -> Record | None:
    if a is None or (b is not None and b.version > a.version):
        return b
    return a


def _retitled(error: KVError, prefix: str) -> KVError:
    """The same error (type and status code), its message prefixed."""
    retitled = type(error)(prefix + error.message)
    retitled.code = error.code
    return retitled


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
        with self.in_flight:
            (stored,), previous = await self._write_new([record], level, want_previous)
        return WriteResult(stored.version, previous)

    async def _replicate_later(self, record: Record, level: Level, delay: float) -> None:
        """The failpoint's broken write: replicate what was already acknowledged."""
        await asyncio.sleep(delay)
        await self._store([record], level, exact=True)

    async def write_many(self, mutations: Sequence[tuple[bytes, bytes, bool]], level: Level) -> list[Version]:
        """Independent puts and deletes; fails if any mutation misses its level."""
        single_key_only(level, "write batches")
        records = [
            Record(key, b"" if delete else value, Version(self.clock.now(), self.node_id), delete)
            for key, value, delete in mutations
        ]
        with self.in_flight:
            stored, _ = await self._write_new(records, level)
        return [r.version for r in stored]

    async def replicate_records(self, records: list[Record], level: Level) -> None:
        """Write records with the versions they carry (restores, LINEARIZABLE write-back): a
        replica holding a version at least as new has what they need."""
        failures, _ = await self._store(records, level, exact=False)
        if failures:
            raise _retitled(failures[0][1], f"{len(failures)} of {len(records)} writes failed; first: ")

    async def _write_new(
        self, records: list[Record], level: Level, want_previous: bool = False
    ) -> tuple[list[Record], Record | None]:
        """Store new writes. A record that a newer version superseded on too many replicas (a
        concurrent write from another coordinator won there) is stamped again, above it (the
        replicas' answers moved this node's clock past it), and sent again, for as long as the
        replica timeout allows: a write is acknowledged only once a read can return it. (A later
        write that wins again started after this one was stamped, so each round makes progress, as
        CockroachDB's "write too old" restarts do.) A read may have returned the earlier stamp from
        a replica that took it; at QUORUM and ONE that read was concurrent with the write, which
        those levels allow. LINEARIZABLE writes are never stamped again, or a value a LINEARIZABLE
        read returned could take effect a second time, after a later write: they are acknowledged
        by version, as ABD does. Returns the records as stored, and the newest previous record the
        replicas reported (single writes that asked for it)."""
        records = list(records)
        exact = level is not Level.LINEARIZABLE
        pending = list(range(len(records)))
        previous: Record | None = None
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            batch = [records[i] for i in pending]
            failures, newest = await self._store(batch, level, exact=exact, want_previous=want_previous)
            previous = _newer(previous, newest)
            superseded = [pending[n] for n, _, lost_race in failures if lost_race]
            if (
                not failures
                or len(superseded) < len(failures)
                or asyncio.get_running_loop().time() > deadline
            ):
                break
            await asyncio.sleep(random.uniform(0, RESTAMP_PAUSE))  # contending writers spread out
            for i in superseded:
                records[i] = records[i]._replace(version=Version(self.clock.now(), self.node_id))
            pending = superseded
        if failures:
            raise _retitled(failures[0][1], f"{len(failures)} of {len(batch)} writes failed; first: ")
        return records, previous

    async def _store(
        self, records: list[Record], level: Level, *, exact: bool, want_previous: bool = False
    ) -> tuple[list[Failure], Record | None]:
        """Send ``records`` to their replicas at ``level``. Returns the failures, and the newest
        record they replaced (when ``want_previous``)."""
        items = [(r, want_previous) for r in records]
        with self.topology.request() as placement:
            if placement.sole_replica == self.node_id:  # no other replica: no tracking needed
                outcomes = await self.roster.local.apply(items)
                failures: list[Failure] = []
                previous: Record | None = None
                for i, outcome in enumerate(outcomes):
                    if isinstance(outcome, KVError):
                        failures.append((i, outcome, False))
                    elif exact and not outcome[0]:
                        failures.append((i, _superseded(level), True))
                    else:
                        previous = _newer(previous, outcome[1])
                return failures, previous
        trackers = await self._replicate(items, level, exact=exact)
        failures = [(i, t.error(level), t.lost_race) for i, t in enumerate(trackers) if not t.future.result()]
        return failures, functools.reduce(_newer, (t.previous for t in trackers), None)

    async def read(
        self, keys: list[bytes], level: Level, max_bytes: int | None = None
    ) -> list[Record | None]:
        """The newest record (tombstones included) of each key, from as many replicas as ``level``
        needs. LINEARIZABLE reads make sure a quorum holds the result before returning it. With
        ``max_bytes`` (a BatchGet's budget), each replica refuses to load more than that, and the
        read fails with :class:`OverBudget` before the node holds more."""
        local = self.roster.local
        if len(keys) == 1 and not local.rebuilding and max_bytes is None:
            placement = self.topology.placement
            replicas = placement.read_replicas(placement.partition(keys[0]))
            if self.node_id in replicas and level.needed(len(replicas)) == 1:
                # one answer suffices and this node has it, unless its copy failed its check
                (answer,) = local.read_now(keys)
                if not isinstance(answer, Corrupt):
                    return [answer]
                if len(replicas) == 1:
                    raise DataLoss(f"{level.name} read: the only copy failed its checksum; none was served")
        with self.in_flight:
            return await self._read_replicas(keys, level, max_bytes)

    async def _read_replicas(
        self, keys: list[bytes], level: Level, max_bytes: int | None = None
    ) -> list[Record | None]:
        for attempt in range(ATTEMPTS):
            with self.topology.request() as placement:
                trackers = await self._collect(keys, level, placement, max_bytes)
            if all(t.done for t in trackers) or not any(t.stale for t in trackers) or attempt == ATTEMPTS - 1:
                break
        results: list[Record | None] = []
        write_back: list[Record] = []
        for tracker in trackers:
            if not tracker.done:
                raise tracker.error(level)
            best = newest(list(tracker.answers.values()))
            results.append(best)
            if best is None:
                continue  # nothing to repair a corrupt copy with; its node's scrub reports it
            stale = [n for n, rec in tracker.answers.items() if rec is None or rec.version < best.version]
            if stale:
                self._repair(best, stale)
                if level is Level.LINEARIZABLE:
                    write_back.append(best)
            if tracker.corrupt:
                self._repair_corrupt(best, sorted(tracker.corrupt))
        if write_back:
            await self.replicate_records(write_back, Level.QUORUM)
        return results

    # -- writes ------------------------------------------------------------------------------

    async def _replicate(self, items: list[ApplyItem], level: Level, *, exact: bool) -> list[_WriteTracker]:
        for attempt in range(ATTEMPTS):
            with self.topology.request() as placement:
                trackers = self._send(items, level, placement, exact)
                await asyncio.wait([t.future for t in trackers], timeout=self.timeout + 0.5)
            for t in trackers:
                _settle(t.future, False)
            if all(t.future.result() for t in trackers) or attempt == ATTEMPTS - 1:
                break
            if not any(t.stale for t in trackers):
                break
        return trackers

    def _send(
        self, items: list[ApplyItem], level: Level, placement: Placement, exact: bool
    ) -> list[_WriteTracker]:
        loop = asyncio.get_running_loop()
        trackers: list[_WriteTracker] = []
        per_target: dict[str, list[int]] = {}
        for i, (record, _) in enumerate(items):
            old, new = placement.write_sets(placement.partition(record.key))
            trackers.append(
                _WriteTracker(
                    old, new, level.needed(len(old)), level.needed(len(new)), loop.create_future(), exact
                )
            )
            for target in dict.fromkeys(old + new):
                per_target.setdefault(target, []).append(i)
        for target, indexes in per_target.items():
            task = loop.create_task(self.roster.get(target).apply([items[i] for i in indexes]))
            task.add_done_callback(functools.partial(self._applied, target, indexes, items, trackers))
            lingering.linger(task)  # a slower replica's copy goes on after the answer
        return trackers

    def _applied(
        self,
        target: str,
        indexes: list[int],
        items: list[ApplyItem],
        trackers: list[_WriteTracker],
        task: asyncio.Task[list[ApplyResult]],
    ) -> None:
        error = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if error is not None:
            for i in indexes:
                trackers[i].fail(target, error)
            if not isinstance(error, StaleEpoch) and target != self.node_id:
                self.hints.defer(target, [items[i][0] for i in indexes])
            return
        missed: list[Record] = []
        for i, outcome in zip(indexes, task.result(), strict=True):
            if isinstance(outcome, KVError):
                trackers[i].fail(target, outcome)
                if outcome.code not in _DEFINITE:
                    missed.append(items[i][0])
            else:
                trackers[i].ack(target, *outcome)
        if missed and target != self.node_id:
            self.hints.defer(target, missed)

    # -- reads -------------------------------------------------------------------------------

    async def _collect(
        self, keys: list[bytes], level: Level, placement: Placement, max_bytes: int | None
    ) -> list[_ReadTracker]:
        trackers = [
            _ReadTracker(
                self.roster.preferred(replicas := placement.read_replicas(placement.partition(k))),
                level.needed(len(replicas)),
            )
            for k in keys
        ]
        inflight: dict[asyncio.Task[list[ReadAnswer]], tuple[str, list[int]]] = {}
        try:
            self._ask(keys, trackers, range(len(keys)), 0, inflight, max_bytes)
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
                    self._ask(keys, trackers, waiting, 1, inflight, max_bytes)
                    continue
                for task in done:
                    target, indexes = inflight.pop(task)
                    error = task.exception()
                    if isinstance(error, OverBudget):
                        raise error  # every replica would say the same
                    for n, i in enumerate(indexes):
                        tracker = trackers[i]
                        if error is None:
                            tracker.answer(target, task.result()[n])
                        else:
                            tracker.outstanding.discard(target)
                            tracker.stale |= isinstance(error, StaleEpoch)
                self._ask(keys, trackers, waiting, 0, inflight, max_bytes)
        finally:
            for task in inflight:  # answers no longer needed; don't leave their errors unretrieved
                task.add_done_callback(_ignore_result)
        return trackers

    def _ask(
        self,
        keys: list[bytes],
        trackers: list[_ReadTracker],
        indexes: Iterable[int],
        extra: int,
        inflight: dict[asyncio.Task[list[ReadAnswer]], tuple[str, list[int]]],
        max_bytes: int | None,
    ) -> None:
        """Send each tracker's next requests, one batched call per replica. This node's own store
        answers inline, without a task; where its copy is corrupt, the next replica is asked."""
        local = self.roster.local
        while True:
            per_target: dict[str, list[int]] = {}
            for i in indexes:
                for target in trackers[i].take(extra):
                    per_target.setdefault(target, []).append(i)
            inline = None if local.rebuilding else per_target.pop(local.id, None)
            loop = asyncio.get_running_loop()
            for target, idx in per_target.items():
                task = loop.create_task(self.roster.get(target).read([keys[i] for i in idx], max_bytes))
                inflight[task] = (target, idx)
            if inline is None:
                return
            for i, answer in zip(inline, local.read_now([keys[i] for i in inline], max_bytes), strict=True):
                trackers[i].answer(local.id, answer)
            indexes, extra = [i for i in inline if local.id in trackers[i].corrupt], 0

    def _repair(self, record: Record, stale: list[str]) -> None:
        """Send the newest version to replicas that answered with an older one; don't wait."""
        self.metrics.read_repairs.inc(len(stale))
        for target in stale:
            self._spawn(self.roster.get(target).apply([(record, False)], repair=True))

    def _repair_corrupt(self, record: Record, targets: list[str]) -> None:
        """Replace copies that failed their check with the newest intact one; don't wait. A stored
        corrupt copy counts as absent, so the same version replaces it."""
        corruption.log(
            "read",
            logging.WARNING,
            "a read of key %r found copies failing their checksum on %s; repairing them from version %s",
            record.key[:64],
            ", ".join(targets),
            tuple(record.version),
        )
        for target in targets:
            self._spawn(self._fix(target, record))

    async def _fix(self, target: str, record: Record) -> None:
        outcome = (await self.roster.get(target).apply([(record, False)], repair=True))[0]
        if not isinstance(outcome, KVError):
            self.metrics.corrupt_repairs.labels("read").inc()

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

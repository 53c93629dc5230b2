"""Gathering concurrent calls to one node into one RPC.

A Python gRPC server spends about 220 µs of CPU per RPC before doing any work, while one more key
in a batch costs a few µs (bench/README.md). So when an application has many calls in flight, the
client sends fewer, larger RPCs. The rule is the peer links' (``kvnode/cluster/batching.py``): a
call leaves at once when nothing is in flight on its queue, so an idle client adds no latency;
while an RPC is in flight the next calls gather, and leave together when it returns, within a cap
on items and bytes.

Unlike the peer links, each caller here is one item with its own result and its own error, its own
deadline, and it may be cancelled: a cancelled or timed-out caller that was not sent yet is never
sent. Two writes of the same key never share a batch: the second waits for the next one, so the
order of a key's writes is the order they were sent in.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeAlias, TypeVar

from kvnode.core.errors import DeadlineExceeded, KVError

I = TypeVar("I")  # noqa: E741 - item
R = TypeVar("R")  # result

Outcome: TypeAlias = R | KVError
"""What a batch answers for one item: its result, or the error that item alone failed with."""


@dataclass
class CoalesceStats:
    """Counts kept by a client's coalescers, for an application to export as it likes (the client
    process has no metrics registry of its own). ``sizes`` maps a batch size to the number of
    batch RPCs of that size; calls sent alone (LINEARIZABLE, short deadlines, ``coalesce=False``)
    are not counted here."""

    calls: int = 0
    """Calls that went through a coalescer."""
    rpcs: int = 0
    """The batch RPCs they rode in."""
    sizes: Counter[int] = field(default_factory=Counter)

    def record(self, size: int) -> None:
        self.calls += size
        self.rpcs += 1
        self.sizes[size] += 1

    @property
    def mean_size(self) -> float:
        return self.calls / self.rpcs if self.rpcs else 0.0


@dataclass
class _Waiting(Generic[I, R]):
    item: I
    key: bytes
    size: int
    deadline: float
    future: asyncio.Future[R]


Send = Callable[[list[I], float], Awaitable[Sequence[Outcome[R]]]]
"""Sends items in one RPC within the given seconds; answers one outcome per item, in order, or
raises when the whole RPC failed."""


class Coalescer(Generic[I, R]):
    """One queue of calls (one node, one RPC kind, one level) and at most one RPC in flight."""

    def __init__(
        self,
        send: Send[I, R],
        *,
        max_items: int,
        max_bytes: int,
        stats: CoalesceStats,
        distinct_keys: bool,
    ) -> None:
        self._send = send
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._stats = stats
        self._distinct_keys = distinct_keys
        self._waiting: deque[_Waiting[I, R]] = deque()
        self._busy = False
        self._task: asyncio.Task[None] | None = None  # held, or the loop may drop it mid-flight

    async def call(self, item: I, *, key: bytes, size: int, timeout: float) -> R:
        """Send ``item`` (of ``size`` bytes) with whatever else gathers, and return its result or
        raise its error; DeadlineExceeded after ``timeout`` seconds."""
        if not self._busy and not self._waiting:
            return await self._alone(item, timeout)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(item, key, size, time.monotonic() + timeout, future))
        self._flush()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise DeadlineExceeded(
                f"no answer within {timeout:g}s (the call waited to share a batch RPC)"
            ) from None

    async def _alone(self, item: I, timeout: float) -> R:
        """Nothing in flight: the call leaves at once, from its caller's own task (no task or
        future of ours on the way, so a lone call costs what it would without coalescing)."""
        self._busy = True
        self._stats.record(1)
        try:
            (outcome,) = await self._send([item], timeout)
        finally:
            self._busy = False
            self._flush()
        if isinstance(outcome, KVError):
            raise outcome
        return outcome

    def _take(self) -> list[_Waiting[I, R]]:
        """The next batch: callers still waiting, in order, within the caps."""
        batch: list[_Waiting[I, R]] = []
        keys: set[bytes] = set()
        size = 0
        kept: deque[_Waiting[I, R]] = deque()
        while self._waiting and len(batch) < self._max_items:
            waiting = self._waiting.popleft()
            if waiting.future.done():
                continue  # cancelled or timed out before it was sent: never send it
            if batch and size + waiting.size > self._max_bytes:
                self._waiting.appendleft(waiting)
                break
            if self._distinct_keys and waiting.key in keys:
                kept.append(waiting)  # the key's earlier write goes first, in this batch
                continue
            keys.add(waiting.key)
            size += waiting.size
            batch.append(waiting)
        self._waiting.extendleft(reversed(kept))
        return batch

    def _flush(self) -> None:
        if self._busy:
            return
        batch = self._take()
        if batch:
            self._busy = True
            self._stats.record(len(batch))
            self._task = asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[_Waiting[I, R]]) -> None:
        try:
            seconds = max(w.deadline for w in batch) - time.monotonic()
            try:
                outcomes = await self._send([w.item for w in batch], max(seconds, 0.001))
            except Exception as exc:  # noqa: BLE001 - whatever failed the RPC, its callers must hear it
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
                return
            for waiting, outcome in zip(batch, outcomes, strict=True):
                if waiting.future.done():
                    continue
                if isinstance(outcome, KVError):
                    waiting.future.set_exception(outcome)
                else:
                    waiting.future.set_result(outcome)
        finally:
            self._busy = False
            self._flush()

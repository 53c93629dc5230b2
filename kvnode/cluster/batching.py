"""Coalescing many small calls into few RPCs.

Python gRPC pays a fixed cost per RPC that dwarfs the cost of one more item in a message. A
``Batcher`` sends at once while fewer than ``max_inflight`` RPCs are outstanding, so an idle link adds
no delay; once that many are in flight, new calls queue and leave together in the next RPC. This is
the network twin of group commit, and it lets the replica commit them together as well. One RPC in
flight per peer and direction measured best on a loaded cluster (bench/README.md).

Under load a link also lingers: while its node coordinates many client requests (:class:`InFlight`),
it waits up to ``linger`` seconds after its last batch, so batches grow instead of leaving every time
the last RPC returns (its round trip is only a few ms). A request then waits up to ``linger`` more,
which costs nothing when dozens are queued for the CPU anyway, and every message saved is CPU saved.
A node with few requests in flight never lingers, so light load keeps its latency.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - item
R = TypeVar("R")  # result


BUSY_AT = 8  # client requests in progress on this node from which its links linger


class InFlight:
    """Counts the client requests this node is coordinating that wait on other replicas right now
    (``with in_flight:`` around each); requests this node answers alone never touch a link."""

    def __init__(self, busy_at: int = BUSY_AT) -> None:
        self.requests = 0
        self._busy_at = busy_at

    def pressure(self) -> float:
        """0 below ``busy_at`` requests in progress, then rising to 1 at twice that: how much of its
        linger a link waits. Lingering fully at moderate load costs latency, and so throughput
        (bench/README.md has the comparison)."""
        if self.requests < self._busy_at:
            return 0.0
        return min(1.0, self.requests / (2 * self._busy_at))

    def __enter__(self) -> None:
        self.requests += 1

    def __exit__(self, *exc: object) -> None:
        self.requests -= 1


class Batcher(Generic[I, R]):
    """Sends lists of items through ``send``, merging the lists of concurrent callers into one call
    while an earlier call is in flight, within ``max_items`` and ``max_bytes``."""

    def __init__(
        self,
        send: Callable[[list[I]], Awaitable[Sequence[R]]],
        *,
        max_items: int = 1000,
        max_bytes: int = 4 * 1024 * 1024,
        size_of: Callable[[I], int] = lambda _: 1,
        max_inflight: int = 1,
        linger: float = 0.0,
        pressure: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self._send = send
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._size_of = size_of
        self._max_inflight = max_inflight
        self._pending: deque[tuple[list[I], asyncio.Future[list[R]]]] = deque()
        self._inflight = 0
        self._linger = linger
        self._pressure = pressure
        self._last_sent = 0.0
        self._timer: asyncio.TimerHandle | None = None

    async def call(self, items: list[I]) -> list[R]:
        """Send ``items`` (perhaps with others' items) and return their results, in order."""
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        self._flush()
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        if self._linger and self._pending and self._inflight < self._max_inflight:
            wait = self._last_sent + self._linger * self._pressure() - loop.time()
            if wait > 0:
                self._timer = loop.call_later(wait, self._lingered)
                return
        while self._pending and self._inflight < self._max_inflight:
            groups: list[tuple[list[I], asyncio.Future[list[R]]]] = []
            count = size = 0
            while self._pending:
                items, _ = self._pending[0]
                item_bytes = sum(self._size_of(i) for i in items)
                if groups and (count + len(items) > self._max_items or size + item_bytes > self._max_bytes):
                    break
                groups.append(self._pending.popleft())
                count += len(items)
                size += item_bytes
            self._inflight += 1
            self._last_sent = loop.time()
            loop.create_task(self._run(groups))  # noqa: RUF006 - _run settles every future itself

    def _lingered(self) -> None:
        self._timer = None
        self._flush()

    async def _run(self, groups: list[tuple[list[I], asyncio.Future[list[R]]]]) -> None:
        try:
            flat = [item for items, _ in groups for item in items]
            try:
                results = list(await self._send(flat))
            except BaseException as exc:
                for _, future in groups:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                if not isinstance(exc, Exception):
                    raise
                return
            start = 0
            for items, future in groups:
                if not future.done():
                    future.set_result(results[start : start + len(items)])
                start += len(items)
        finally:
            self._inflight -= 1
            self._flush()

"""How much client work a node takes on at once: requests in number, and the memory they hold.

A request is in progress from its admission until its RPC ends, which is when its answer has left
the node: an answer that a client has not read yet still holds memory, so it still counts. Its
memory is counted in three steps, so that nothing is loaded before it is counted:

1. Before the request's bytes are taken in from the connection, the most a request may carry (the
   gRPC message cap) is set aside, waiting its turn if the node is busy. The handlers of these
   requests read their message themselves (see :func:`kvnode.server.rpc.instrument`); until then
   HTTP/2 flow control leaves the bytes with the client.
2. Once read, the request is counted at its real size.
3. A read sets aside room for its answer before it loads anything (:func:`answer_budget`), and once
   built, the answer is counted at its real size until it has left.

A request beyond ``--max-requests``, or one that waits for memory longer than :data:`MEMORY_WAIT`,
is refused with RESOURCE_EXHAUSTED and the trailing metadata ``kvnode-overloaded``, which tells the
client that nothing was done and that it may send the request again after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc

from kvnode.cluster import lingering
from kvnode.core.errors import KVError

MEMORY_WAIT = 1.0
"""Seconds a request waits for memory to take its bytes in before it is refused as overloaded."""

METADATA = (("kvnode-overloaded", "1"),)


class Overloaded(KVError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


@dataclass(eq=False)
class _Waiter:
    size: int
    ticket: Ticket
    granted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Admission:
    """The caps of one node (``--max-requests``, ``--max-request-memory``) and what is in progress."""

    def __init__(self, limit: int, max_bytes: int, message_bytes: int, wait: float = MEMORY_WAIT) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.message_bytes = message_bytes
        self.wait = wait
        self.in_progress = 0
        self.bytes = 0
        self._waiting: deque[_Waiter] = deque()

    @property
    def free_bytes(self) -> int:
        return max(0, self.max_bytes - self.bytes)

    def admit(self) -> Ticket:
        if self.in_progress >= self.limit:
            raise Overloaded(
                f"the node has {self.in_progress} requests in progress, its limit (--max-requests); "
                "try again shortly"
            )
        self.in_progress += 1
        return Ticket(self)

    async def _take(self, ticket: Ticket, size: int) -> None:
        """Count ``size`` more bytes for ``ticket`` as soon as they are free, first come first
        served; refuse after :attr:`wait` seconds."""
        if not self._waiting and size <= self.free_bytes:
            ticket._count(size)
            return
        waiter = _Waiter(size, ticket)
        self._waiting.append(waiter)
        expiry = asyncio.get_running_loop().call_later(self.wait, self._expire, waiter)
        try:
            await waiter.granted
        finally:
            expiry.cancel()
            if not waiter.granted.done():  # the call was cancelled while it waited
                waiter.granted.cancel()
            with contextlib.suppress(ValueError):
                self._waiting.remove(waiter)
                self._wake()  # it may have held up the ones behind it

    def _expire(self, waiter: _Waiter) -> None:
        if not waiter.granted.done():
            waiter.granted.set_exception(
                Overloaded(
                    f"the requests in progress on this node hold {self.bytes} bytes of its "
                    f"{self.max_bytes} (--max-request-memory), and none were free for this one "
                    f"within {self.wait:g}s; try again shortly"
                )
            )

    def _wake(self) -> None:
        while self._waiting and self._waiting[0].size <= self.free_bytes:
            waiter = self._waiting.popleft()
            if not waiter.granted.done():
                waiter.ticket._count(waiter.size)
                waiter.granted.set_result(None)


class Ticket:
    """One admitted request's share of an :class:`Admission`, given back once, when its RPC has
    ended and the work it left running (:mod:`kvnode.cluster.lingering`) has too."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._request = 0
        self._answer = 0
        self._open = True
        self._answered = False
        self._lingering = 0

    def _count(self, more: int) -> None:
        if self._open:
            self._request += more
            self._admission.bytes += more

    async def make_room(self) -> None:
        """Wait until the largest request there may be is counted for this one (the module's
        step 1)."""
        await self._admission._take(self, self._admission.message_bytes)

    def hold_request(self, size: int) -> None:
        """Count the request at ``size`` bytes, in place of the room made for it."""
        self._set("_request", size)

    def hold_answer(self, size: int) -> None:
        """Count ``size`` bytes for the answer, in place of what was counted for it before."""
        self._set("_answer", size)

    def reserve_answer(self, most: int) -> int:
        """Set aside up to ``most`` bytes for the answer; returns how many (fewer when busy)."""
        granted = min(most, self._answer + self._admission.free_bytes)
        self.hold_answer(granted)
        return granted

    def _set(self, part: str, size: int) -> None:
        if self._open:
            before = getattr(self, part)
            setattr(self, part, size)
            self._admission.bytes += size - before
            if size < before:
                self._admission._wake()

    def keep_for(self, work: asyncio.Future[Any]) -> None:
        """Count this request until ``work`` ends too (a slower replica's copy of a write)."""
        if self._open and not work.done():
            self._lingering += 1
            work.add_done_callback(self._work_done)

    def _work_done(self, _: object) -> None:
        self._lingering -= 1
        if self._answered and not self._lingering:
            self._close()

    def release(self) -> None:
        """The RPC has ended: the answer has left, and its bytes are free. The request's own
        stay counted while work it left running holds them."""
        if self._answered:
            return
        self._answered = True
        self.hold_answer(0)
        if not self._lingering:
            self._close()

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._admission.in_progress -= 1
            self._admission.bytes -= self._request + self._answer
            self._admission._wake()


current: ContextVar[Ticket | None] = ContextVar("kvnode_request_ticket", default=None)


@contextlib.contextmanager
def handling(ticket: Ticket | None) -> Iterator[None]:
    """Around the handler of ``ticket``'s request: the reads it makes set aside room for their
    answer from it (:func:`answer_budget`), and the work it leaves running keeps it."""
    token = current.set(ticket)
    held = lingering.hold_with(None if ticket is None else ticket.keep_for)
    try:
        yield
    finally:
        lingering.release(held)
        current.reset(token)


def answer_budget(most: int) -> int:
    """Before a read loads anything: set aside up to ``most`` bytes of ``--max-request-memory``
    for the answer of the request being handled, and return how many were set aside, which is
    fewer when the requests in progress hold nearly all of it. ``most`` where no cap applies."""
    ticket = current.get()
    return most if ticket is None else ticket.reserve_answer(most)

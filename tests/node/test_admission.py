"""The node's admission: a cap on requests in progress, and one on the bytes they hold, waited for
in turn and given back when each RPC ends."""

from __future__ import annotations

import asyncio

import pytest

from kvnode.cluster import lingering
from kvnode.server.admission import Admission, Overloaded, Ticket, answer_budget, current, handling

MESSAGE = 10
"""The gRPC message cap of these tests: the room each request makes before it is read."""
GUARD = 5.0


def admission(limit: int = 8, max_bytes: int = 30, wait: float = 30.0) -> Admission:
    return Admission(limit, max_bytes, MESSAGE, wait=wait)


async def admitted(node: Admission) -> Ticket:
    """A ticket that has made room for its request."""
    ticket = node.admit()
    await asyncio.wait_for(ticket.make_room(), GUARD)
    return ticket


def test_requests_past_the_count_are_refused_at_once_and_admitted_again_once_one_ends() -> None:
    node = admission(limit=2)
    first, _ = node.admit(), node.admit()
    with pytest.raises(Overloaded, match=r"2 requests in progress, its limit \(--max-requests\)"):
        node.admit()
    first.release()
    first.release()  # given back once, however often its RPC reports the end
    assert node.in_progress == 1
    node.admit()
    assert node.in_progress == 2


async def test_a_request_that_finds_no_room_waits_and_takes_it_when_one_ends() -> None:
    node = admission(max_bytes=25)
    holders = [await admitted(node), await admitted(node)]
    assert node.bytes == 20
    waiting = asyncio.create_task(admitted(node))
    await asyncio.sleep(0.05)
    assert not waiting.done(), "5 bytes are free, the request needs 10"
    holders[0].release()
    third = await asyncio.wait_for(waiting, GUARD)
    assert node.bytes == 20 and node.in_progress == 2
    third.release()
    holders[1].release()
    assert (node.bytes, node.in_progress) == (0, 0)


async def test_a_request_counted_at_its_real_size_lets_the_next_in() -> None:
    """Room is made for the largest message; once read, a small request gives the rest back."""
    node = admission(max_bytes=15)
    first = await admitted(node)
    waiting = asyncio.create_task(admitted(node))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    first.hold_request(2)
    await asyncio.wait_for(waiting, GUARD)
    assert node.bytes == 12


async def test_waiters_are_served_first_come_first_served() -> None:
    """A small request does not overtake a larger one that waits before it (which would starve
    large requests on a busy node)."""
    node = admission(max_bytes=20)
    holder = await admitted(node)
    holder.hold_request(MESSAGE + 5)  # 5 free
    order: list[str] = []

    async def take(name: str, size: int) -> None:
        ticket = node.admit()
        await node._take(ticket, size)
        order.append(name)

    big = asyncio.create_task(take("big", 10))
    await asyncio.sleep(0.01)
    small = asyncio.create_task(take("small", 4))
    await asyncio.sleep(0.05)
    assert order == [], "the small one would fit, but the big one came first"
    holder.release()
    await asyncio.wait_for(asyncio.gather(big, small), GUARD)
    assert order == ["big", "small"]


async def test_a_request_that_waits_too_long_is_refused_and_the_ones_behind_it_go_on() -> None:
    node = admission(max_bytes=12, wait=0.2)
    holder = await admitted(node)
    holder.hold_request(5)  # 7 free: the next waits for 10
    stuck = node.admit()
    with pytest.raises(Overloaded, match=r"hold 5 bytes of its 12 \(--max-request-memory\).*within 0.2s"):
        await asyncio.wait_for(stuck.make_room(), GUARD)
    stuck.release()
    assert node.bytes == 5 and node.in_progress == 1
    ticket = node.admit()
    await asyncio.wait_for(node._take(ticket, 6), GUARD)  # nobody is left waiting in front of it


async def test_a_cancelled_waiter_leaves_the_queue_and_wakes_the_one_behind() -> None:
    node = admission(max_bytes=15)
    holder = await admitted(node)
    holder.hold_request(5)  # 10 free
    blocker = node.admit()
    waiting_big = asyncio.create_task(node._take(blocker, 12))
    await asyncio.sleep(0.01)
    behind = asyncio.create_task(admitted(node))
    await asyncio.sleep(0.05)
    assert not behind.done(), "queued behind the big one"
    waiting_big.cancel()
    await asyncio.wait_for(behind, GUARD)
    assert node.bytes == 15 and not node._waiting


async def test_an_answer_is_set_aside_before_it_is_loaded_and_counted_until_it_has_left() -> None:
    node = admission(max_bytes=40)
    ticket = await admitted(node)
    ticket.hold_request(4)
    assert ticket.reserve_answer(100) == 36, "only what is free"
    other = await asyncio.wait_for(_fails_to_make_room(node), GUARD)
    ticket.hold_answer(20)  # the answer as built
    assert node.bytes == 24
    other.release()
    ticket.release()
    assert (node.bytes, node.in_progress) == (0, 0)


async def _fails_to_make_room(node: Admission) -> Ticket:
    ticket = node.admit()
    node.wait = 0.05
    with pytest.raises(Overloaded):
        await ticket.make_room()
    return ticket


async def test_answer_budget_applies_to_the_request_being_handled_only() -> None:
    assert answer_budget(1 << 30) == 1 << 30, "no cap outside an admitted request"
    node = admission(max_bytes=30)
    ticket = await admitted(node)
    token = current.set(ticket)
    try:
        assert answer_budget(100) == 20
    finally:
        current.reset(token)
    assert node.bytes == 30


async def test_a_request_stays_counted_while_work_it_left_running_goes_on() -> None:
    """A write answered once a quorum has it still holds its records for the slower replica's
    copy: its bytes and its place count until that ends, though its answer's are free at once."""
    node = admission(max_bytes=40)
    ticket = await admitted(node)
    ticket.hold_request(8)
    ticket.hold_answer(5)
    copy: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with handling(ticket):
        lingering.linger(copy)
    ticket.release()
    assert (node.bytes, node.in_progress) == (8, 1)
    copy.set_result(None)
    await asyncio.sleep(0)  # done-callbacks run on the next turn of the loop
    assert (node.bytes, node.in_progress) == (0, 0)


async def test_work_that_ends_before_the_answer_leaves_holds_nothing_more() -> None:
    node = admission()
    ticket = await admitted(node)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    ticket.keep_for(done)
    ticket.release()
    assert (node.bytes, node.in_progress) == (0, 0)

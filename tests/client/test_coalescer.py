"""The coalescer's rules, with a scripted ``send`` standing in for the node: when calls leave,
what a batch may hold, and that every caller gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from kvnode.client.coalescer import Coalescer, CoalesceStats, Outcome
from kvnode.core.errors import DeadlineExceeded, InvalidArgument, KVError, Unavailable


class Node:
    """Records each batch it is sent; answers ``item.upper()`` once ``release`` is set (or at
    once when ``hold`` is False); an item starting with ``bad`` fails alone."""

    def __init__(self, *, hold: bool = True) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.fail: KVError | None = None
        self._sent = asyncio.Event()

    async def first_sent(self) -> None:
        """Wait until the first batch left."""
        async with asyncio.timeout(5):
            await self._sent.wait()

    async def send(self, items: list[str], seconds: float) -> Sequence[Outcome[str]]:
        self.batches.append(list(items))
        self._sent.set()
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [InvalidArgument(f"{i} is bad") if i.startswith("bad") else i.upper() for i in items]


def coalescer(node: Node, *, max_items: int = 1000, max_bytes: int = 1 << 20) -> Coalescer[str, str]:
    return Coalescer(
        node.send, max_items=max_items, max_bytes=max_bytes, stats=CoalesceStats(), distinct_keys=True
    )


def call(c: Coalescer[str, str], item: str, timeout: float = 5.0) -> asyncio.Task[str]:
    return asyncio.get_running_loop().create_task(
        c.call(item, key=item.encode(), size=len(item), timeout=timeout)
    )


async def test_a_call_leaves_at_once_when_nothing_is_in_flight() -> None:
    node = Node(hold=False)
    c = coalescer(node)
    assert await c.call("a", key=b"a", size=1, timeout=5) == "A"
    assert await c.call("b", key=b"b", size=1, timeout=5) == "B"
    assert node.batches == [["a"], ["b"]]


async def test_calls_gather_while_an_rpc_is_in_flight_and_leave_together_when_it_returns() -> None:
    node = Node()
    c = coalescer(node)
    first = call(c, "a")
    await node.first_sent()
    rest = [call(c, x) for x in "bcde"]
    await asyncio.sleep(0.01)
    assert node.batches == [["a"]]  # nothing else leaves while "a" is in flight
    node.release.set()
    assert await asyncio.gather(first, *rest) == ["A", "B", "C", "D", "E"]
    assert node.batches == [["a"], ["b", "c", "d", "e"]]


async def batches_of(items: list[str], *, max_items: int = 1000, max_bytes: int = 1 << 20) -> list[list[str]]:
    """The batches ``items``, called at once, leave in (the first leaves alone and is held until
    all the others gather); every caller must get its own answer."""
    node = Node()
    c = coalescer(node, max_items=max_items, max_bytes=max_bytes)
    tasks = [call(c, x) for x in items]
    await node.first_sent()
    node.release.set()
    assert await asyncio.gather(*tasks) == [x.upper() for x in items]
    return node.batches


async def test_the_item_cap_splits_a_gathering() -> None:
    assert await batches_of(list("abcde"), max_items=2) == [["a"], ["b", "c"], ["d", "e"]]


async def test_the_byte_cap_splits_a_gathering_but_an_oversized_item_still_leaves_alone() -> None:
    batches = await batches_of(["a", "bbb", "ccc", "dd", "eeeeeeeeee"], max_bytes=6)
    assert batches == [["a"], ["bbb", "ccc"], ["dd"], ["eeeeeeeeee"]]


async def test_two_writes_of_one_key_never_share_a_batch_and_keep_their_order() -> None:
    assert await batches_of(["a", "k", "b", "k", "k"]) == [["a"], ["k", "b"], ["k"], ["k"]]


async def test_each_caller_gets_its_own_result_and_a_bad_item_fails_its_caller_only() -> None:
    node = Node()
    stats = CoalesceStats()
    c = Coalescer(node.send, max_items=100, max_bytes=1000, stats=stats, distinct_keys=False)
    first = call(c, "x")
    await node.first_sent()
    tasks = [call(c, x) for x in ("a", "bad1", "b")]
    node.release.set()
    results = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert results[0] == "X" and results[1] == "A" and results[3] == "B"
    assert isinstance(results[2], InvalidArgument) and "bad1 is bad" in results[2].message
    assert stats.rpcs == 2 and stats.calls == 4 and stats.sizes == {1: 1, 3: 1}


async def test_a_cancelled_caller_is_never_sent_and_the_others_are_answered() -> None:
    node = Node()
    c = coalescer(node)
    first = call(c, "a")
    await node.first_sent()
    gone, kept = call(c, "gone"), call(c, "kept")
    await asyncio.sleep(0)
    gone.cancel()
    node.release.set()
    assert list(await asyncio.gather(first, kept)) == ["A", "KEPT"]
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert node.batches == [["a"], ["kept"]]


async def test_a_caller_whose_deadline_passes_while_gathering_gets_deadline_exceeded_alone() -> None:
    node = Node()
    c = coalescer(node)
    first = call(c, "a")
    await node.first_sent()
    short, long = call(c, "short", timeout=0.05), call(c, "long")
    with pytest.raises(DeadlineExceeded):
        await short
    node.release.set()
    assert list(await asyncio.gather(first, long)) == ["A", "LONG"]
    assert node.batches == [["a"], ["long"]]  # the expired call was never sent


async def test_a_node_failing_mid_batch_fails_every_caller_in_that_batch_and_the_queue_goes_on() -> None:
    node = Node()
    c = coalescer(node)
    node.fail = Unavailable("node went away")
    tasks = [call(c, x) for x in "abc"]
    await node.first_sent()
    node.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    node.fail = None
    assert await c.call("d", key=b"d", size=1, timeout=5) == "D"


async def test_a_lone_call_cancelled_in_flight_frees_the_queue_for_the_gathered_ones() -> None:
    node = Node()
    c = coalescer(node)
    lone = call(c, "a")
    await node.first_sent()
    waiting = call(c, "b")
    await asyncio.sleep(0)
    lone.cancel()  # its RPC is abandoned, as a unary call's would be
    with pytest.raises(asyncio.CancelledError):
        await lone
    node.release.set()
    assert await waiting == "B"
    assert node.batches == [["a"], ["b"]]

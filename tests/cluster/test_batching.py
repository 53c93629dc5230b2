"""The peer links' batcher: coalescing while an RPC is in flight, and lingering only when busy."""

from __future__ import annotations

import asyncio

import pytest

from kvnode.cluster.batching import Batcher, InFlight
from kvnode.testing.processes import wait_until


class FakeRPC:
    """Records each batch it is sent; answers only when released (or at once if ``auto``)."""

    def __init__(self, *, auto: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.sent_at: list[float] = []
        self.auto = auto
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def send(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.sent_at.append(asyncio.get_running_loop().time())
        if not self.auto:
            await self.release.wait()
            self.release.clear()
        if self.fail is not None:
            raise self.fail
        return [i * 10 for i in items]


async def test_an_idle_link_sends_at_once_and_queues_behind_an_rpc_in_flight() -> None:
    rpc = FakeRPC()
    batcher: Batcher[int, int] = Batcher(rpc.send)
    first = asyncio.create_task(batcher.call([1]))
    await wait_until(lambda: rpc.batches == [[1]], 5, "the first batch", interval=0.001)
    queued = [asyncio.create_task(batcher.call([n])) for n in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert rpc.batches == [[1]]  # one RPC in flight: the others wait for it
    rpc.release.set()
    assert await first == [10]
    await wait_until(lambda: len(rpc.batches) == 2, 5, "the second batch", interval=0.001)
    assert rpc.batches[1] == [2, 3, 4]  # and leave together, in order
    rpc.release.set()
    assert [await q for q in queued] == [[20], [30], [40]]


async def test_a_failed_rpc_fails_every_caller_in_its_batch() -> None:
    rpc = FakeRPC()
    batcher: Batcher[int, int] = Batcher(rpc.send)
    blocker = asyncio.create_task(batcher.call([0]))
    await wait_until(lambda: len(rpc.batches) == 1, 5, "the first batch", interval=0.001)
    calls = [asyncio.create_task(batcher.call([n])) for n in (1, 2)]
    await asyncio.sleep(0)
    rpc.release.set()
    await blocker
    rpc.fail = ConnectionError("peer gone")
    await wait_until(lambda: len(rpc.batches) == 2, 5, "the second batch", interval=0.001)
    rpc.release.set()
    for call in calls:
        with pytest.raises(ConnectionError):
            await call


async def test_a_batch_stays_within_max_items() -> None:
    rpc = FakeRPC(auto=True)
    batcher: Batcher[int, int] = Batcher(rpc.send, max_items=2)
    results = await asyncio.gather(*(batcher.call([n]) for n in range(5)))
    assert results == [[n * 10] for n in range(5)]
    assert all(len(b) <= 2 for b in rpc.batches)


async def test_a_quiet_node_does_not_linger() -> None:
    """With a linger far longer than the test may take, back-to-back calls that each left at once
    are the only way to finish."""
    rpc = FakeRPC(auto=True)
    batcher: Batcher[int, int] = Batcher(rpc.send, linger=60.0, pressure=InFlight(busy_at=1).pressure)
    assert await asyncio.wait_for(batcher.call([1]), 10) == [10]
    assert await asyncio.wait_for(batcher.call([2]), 10) == [20]
    assert rpc.batches == [[1], [2]]


async def test_a_busy_node_lingers_after_its_last_batch_gathering_what_arrives() -> None:
    linger = 0.5
    in_flight = InFlight(busy_at=1)
    rpc = FakeRPC(auto=True)
    batcher: Batcher[int, int] = Batcher(rpc.send, linger=linger, pressure=in_flight.pressure)
    await batcher.call([1])
    with in_flight, in_flight:  # twice busy_at: the whole linger
        calls = [asyncio.create_task(batcher.call([n])) for n in (3, 4, 5)]
        assert [await c for c in calls] == [[30], [40], [50]]
    assert rpc.batches == [[1], [3, 4, 5]]
    assert rpc.sent_at[1] - rpc.sent_at[0] >= linger - 0.001
    assert in_flight.requests == 0


def test_pressure_grows_from_busy_at_to_twice_that() -> None:
    in_flight = InFlight(busy_at=8)
    seen = []
    for _ in range(20):
        seen.append(in_flight.pressure())
        in_flight.__enter__()
    assert seen[:8] == [0.0] * 8  # below busy_at: never linger
    assert seen[8] == 0.5 and seen[12] == 0.75
    assert seen[16:] == [1.0] * 4

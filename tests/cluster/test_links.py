"""When a peer link calls its peer stalled: after several of the peer's recent round trips, never
before a quarter second. A busy but healthy peer must not look stalled, or other clients' reads
fail at once with "1 of 3 replicas answered"; a paused one must be noticed soon."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kvnode.api.v1 import replica_pb2
from kvnode.cluster.clock import HybridClock
from kvnode.cluster.links import STALL_ROUND_TRIPS, STALL_SECONDS, PeerLink
from kvnode.core.errors import Unavailable
from kvnode.core.records import Record, Version
from kvnode.metrics import NodeMetrics
from kvnode.testing.processes import wait_until

GUARD = 10.0


class SlowPeer:
    """The Replica stub of a peer that answers each Apply after ``delay`` seconds, or, once
    :meth:`pause` is called, not until :meth:`resume`."""

    def __init__(self, clock: HybridClock) -> None:
        self.delay = 0.0
        self._clock = clock
        self._running = asyncio.Event()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    async def Apply(self, request: replica_pb2.ApplyRequest, timeout: float) -> replica_pb2.ApplyResponse:
        await asyncio.sleep(self.delay)
        await self._running.wait()
        outcomes = [replica_pb2.ApplyOutcome(applied=True) for _ in request.items]
        return replica_pb2.ApplyResponse(
            header=replica_pb2.ResponseHeader(hlc=self._clock.last), outcomes=outcomes
        )


@pytest.fixture
async def link() -> AsyncIterator[tuple[PeerLink, SlowPeer]]:
    clock = HybridClock()
    peer_link = PeerLink(
        "n2",
        "127.0.0.1:1",
        node_id="n1",
        clock=clock,
        epoch=lambda: 0,
        adopt=_ignore,
        timeout=30.0,
        metrics=NodeMetrics("n1", "test"),
    )
    peer = SlowPeer(clock)
    peer_link._stub = peer  # type: ignore[assignment]  # the channel goes nowhere; the stub answers
    try:
        yield peer_link, peer
    finally:
        peer.resume()
        await peer_link.close()


async def _ignore(membership: object) -> None:
    """No peer here sends a membership."""


def write(n: int, clock: HybridClock) -> list[tuple[Record, bool]]:
    return [(Record(b"k%d" % n, b"v", Version(clock.now(), "n1")), False)]


async def test_an_idle_peer_that_stops_answering_is_a_stall_after_a_quarter_second(
    link: tuple[PeerLink, SlowPeer],
) -> None:
    peer_link, peer = link
    clock = peer_link._clock
    await asyncio.wait_for(peer_link.apply(write(0, clock)), GUARD)  # a fast round trip
    assert peer_link.stall_after == STALL_SECONDS
    peer.pause()
    hung = asyncio.create_task(peer_link.apply(write(1, clock)))
    await wait_until(lambda: peer_link.stalled, GUARD, "the hung call to count as a stall")
    with pytest.raises(Unavailable, match="has not answered"):
        await peer_link.apply(write(2, clock))
    peer.resume()
    await asyncio.wait_for(hung, GUARD)
    assert not peer_link.stalled


async def test_a_peer_busy_with_slow_batches_is_not_a_stall(link: tuple[PeerLink, SlowPeer]) -> None:
    """Each Apply takes 0.4 s (a batch of large writes on a busy machine): the next one waiting
    0.3 s is the peer's normal pace, and new writes are queued for it, not refused."""
    peer_link, peer = link
    clock = peer_link._clock
    peer.delay = 0.4
    await asyncio.wait_for(peer_link.apply(write(0, clock)), GUARD)
    assert peer_link.stall_after >= STALL_ROUND_TRIPS * 0.4
    pending = asyncio.create_task(peer_link.apply(write(1, clock)))
    await asyncio.sleep(0.3)  # the measurement: a call this old is not a stall at this pace
    assert not peer_link.stalled
    await asyncio.wait_for(asyncio.gather(pending, peer_link.apply(write(2, clock))), GUARD)


async def test_the_allowance_shrinks_again_when_the_peer_speeds_up(link: tuple[PeerLink, SlowPeer]) -> None:
    peer_link, peer = link
    clock = peer_link._clock
    peer.delay = 0.4
    await asyncio.wait_for(peer_link.apply(write(0, clock)), GUARD)
    slow = peer_link.stall_after
    peer.delay = 0.0
    for n in range(40):
        await asyncio.wait_for(peer_link.apply(write(n + 1, clock)), GUARD)
    assert slow >= STALL_ROUND_TRIPS * 0.4
    assert peer_link.stall_after == STALL_SECONDS, "back to the floor after 40 fast answers"

"""The coordinator against a real local store and fake peers: quorums for writes (both replica sets
during a transition), hints for the replicas that failed, newest-wins reads that repair and
speculate, the ABD register behind LINEARIZABLE, and the re-planning a newer epoch forces."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from kvnode.cluster import lingering
from kvnode.cluster.clock import ClockAhead, from_ms, physical_ms
from kvnode.cluster.coordinator import Coordinator
from kvnode.core.errors import InvalidArgument, Unavailable
from kvnode.core.levels import Level
from kvnode.core.membership import Membership
from kvnode.core.records import Record
from kvnode.testing.processes import wait_until
from tests.cluster.fakes import RecordingHints
from tests.cluster.harness import SELF, Node, membership, record, running_node

TIMEOUT = 30.0
"""The coordinator's replica timeout: far longer than any test waits, so that a result that needed
it would show as a test timeout instead of passing by luck."""
GUARD = 20.0

THREE = membership(["n1", "n2", "n3"])
OLDER, NEWER = record("k", "old", hlc=1), record("k", "new", hlc=2)


@contextlib.asynccontextmanager
async def coordinating(
    folder: Path, members: Membership
) -> AsyncIterator[tuple[Node, Coordinator, RecordingHints]]:
    """A coordinator on this node's real parts, with its background repairs finished at the end."""
    async with running_node(folder, members) as node:
        hints = RecordingHints()
        coordinator = Coordinator(
            node.id, node.topology, node.roster, node.clock, hints, node.metrics, timeout=TIMEOUT
        )
        try:
            yield node, coordinator, hints
        finally:
            for peer in node.peers.values():
                peer.recover()
            await coordinator.close()


@pytest.fixture
async def three(tmp_path: Path) -> AsyncIterator[tuple[Node, Coordinator, RecordingHints]]:
    """Three members, RF=3: every partition is on this node and both peers."""
    async with coordinating(tmp_path, THREE) as parts:
        yield parts


async def put(coordinator: Coordinator, key: bytes, value: bytes, level: Level = Level.QUORUM) -> Record:
    result = await asyncio.wait_for(
        coordinator.write(key, value, tombstone=False, level=level, want_previous=False), GUARD
    )
    return Record(key, value, result.version)


# -- writes --------------------------------------------------------------------------------------


async def test_a_write_is_acknowledged_once_a_quorum_has_it_without_waiting_for_the_rest(
    three: tuple[Node, Coordinator, RecordingHints],
) -> None:
    node, coordinator, _ = three
    node.peer("n3").stall()
    written = await put(coordinator, b"k", b"v")
    assert node.storage.get(b"k") == written
    assert node.peer("n2").records[b"k"] == written
    assert node.peer("n3").calls_to("apply"), "the stalled replica was sent the write too"
    assert b"k" not in node.peer("n3").records  # still stalled: the acknowledgement did not wait


@pytest.mark.parametrize(
    ("level", "down", "message"),
    [
        (Level.QUORUM, {"n2", "n3"}, "QUORUM write: 1 of 3 replicas acknowledged, 2 needed"),
        (Level.ALL, {"n3"}, "ALL write: 2 of 3 replicas acknowledged, 3 needed"),
    ],
)
async def test_a_write_too_few_replicas_take_fails_naming_the_counts_and_hints_the_rest(
    three: tuple[Node, Coordinator, RecordingHints], level: Level, down: set[str], message: str
) -> None:
    node, coordinator, hints = three
    for peer_id in down:
        node.peer(peer_id).fail()
    with pytest.raises(Unavailable, match=re.escape(message)):
        await put(coordinator, b"k", b"v", level)
    assert hints.targets() == down
    assert all([r.key for r in records] == [b"k"] for _, records in hints.deferred)


async def test_a_stale_epoch_refusal_is_replanned_not_hinted(
    three: tuple[Node, Coordinator, RecordingHints],
) -> None:
    """n2 holds a newer epoch and refuses; n3 is down. The refusal makes the coordinator adopt the
    newer membership and send again, and only the replica that really missed the write gets a hint."""
    node, coordinator, hints = three
    node.peer("n2").held = replace(THREE, epoch=2)
    node.peer("n3").fail()
    written = await put(coordinator, b"k", b"v")
    assert node.topology.epoch == 2
    assert node.peer("n2").records[b"k"] == written
    assert hints.targets() == {"n3"}


async def test_a_read_planned_on_an_old_epoch_is_planned_again(
    three: tuple[Node, Coordinator, RecordingHints],
) -> None:
    node, coordinator, _ = three
    stored = record("k", "v", hlc=5)
    for peer in node.peers.values():
        peer.held = replace(THREE, epoch=2)
        peer.store(stored)
    assert await coordinator.read([b"k"], Level.QUORUM) == [stored]
    assert node.topology.epoch == 2


@pytest.mark.parametrize(
    ("down", "message"),
    [
        (("joiner",), None),
        (
            ("common", "joiner"),
            "2 of 3 old replicas and 1 of 3 new replicas acknowledged, 2 and 2 needed",
        ),
        (
            ("common", "departing"),
            "1 of 3 old replicas and 2 of 3 new replicas acknowledged, 2 and 2 needed",
        ),
    ],
    ids=["new-quorum-holds", "new-quorum-short", "old-quorum-short"],
)
async def test_during_a_transition_a_write_needs_a_quorum_of_the_old_and_of_the_new_set(
    tmp_path: Path, down: tuple[str, ...], message: str | None
) -> None:
    """n4 joins: for a partition it gains, the old set is (n1, common, departing) and the new one
    (n1, common, n4)."""
    members = membership(["n1", "n2", "n3", "n4"], joining=["n4"])
    async with coordinating(tmp_path, members) as (node, coordinator, hints):
        key = node.key_where(lambda old, new: "n4" in new and SELF in new)
        old, new = node.topology.placement.write_sets(node.topology.placement.partition(key))
        (common,) = set(old) & set(new) - {SELF}
        (departing,) = set(old) - set(new)
        roles = {"joiner": "n4", "common": common, "departing": departing}
        for role in down:
            node.peer(roles[role]).fail()
        if message is None:
            await put(coordinator, key, b"v")
        else:
            with pytest.raises(
                Unavailable, match=re.escape(f"QUORUM write during a membership change: {message}")
            ):
                await put(coordinator, key, b"v")
        assert hints.targets() == {roles[r] for r in down}


async def test_write_many_refuses_linearizable_and_writes_nothing(
    three: tuple[Node, Coordinator, RecordingHints],
) -> None:
    node, coordinator, _ = three
    with pytest.raises(InvalidArgument, match="LINEARIZABLE is for single-key operations"):
        await coordinator.write_many([(b"a", b"1", False)], Level.LINEARIZABLE)
    assert not any(peer.calls for peer in node.peers.values())
    assert node.storage.get(b"a") is None


async def test_write_many_writes_each_mutation_and_fails_if_any_misses_its_level(
    three: tuple[Node, Coordinator, RecordingHints],
) -> None:
    node, coordinator, _ = three
    versions = await coordinator.write_many([(b"a", b"1", False), (b"b", b"", True)], Level.QUORUM)
    assert versions[0] < versions[1]
    assert node.peer("n2").records[b"a"] == Record(b"a", b"1", versions[0])
    assert node.peer("n2").records[b"b"] == Record(b"b", b"", versions[1], tombstone=True)
    for peer in node.peers.values():
        peer.fail()
    with pytest.raises(Unavailable, match=re.escape("2 of 2 writes failed; first: QUORUM write: 1 of 3")):
        await coordinator.write_many([(b"c", b"1", False), (b"d", b"1", False)], Level.QUORUM)


async def test_the_previous_record_a_write_reports_is_the_newest_a_quorum_held(
    three: tuple[Node, Coordinator, RecordingHints],
) -> None:
    """The newest value is on two of three replicas, so whichever quorum answers has seen it."""
    node, coordinator, _ = three
    await node.store(OLDER)
    node.peer("n2").store(NEWER)
    node.peer("n3").store(NEWER)
    result = await coordinator.write(b"k", b"v", tombstone=False, level=Level.QUORUM, want_previous=True)
    assert result.previous == NEWER


# -- reads ---------------------------------------------------------------------------------------


async def test_a_read_at_one_is_answered_by_this_node_alone(
    three: tuple[Node, Coordinator, RecordingHints],
) -> None:
    node, coordinator, _ = three
    stored = record("k", "v")
    await node.store(stored)
    assert await coordinator.read([b"k"], Level.ONE) == [stored]
    assert not any(peer.calls_to("read") for peer in node.peers.values())


@pytest.mark.parametrize("newest_on", ["this node", "the peers"])
async def test_a_quorum_read_returns_the_newest_answer_and_repairs_the_stale_replicas(
    three: tuple[Node, Coordinator, RecordingHints], newest_on: str
) -> None:
    node, coordinator, _ = three
    mine, theirs = (NEWER, OLDER) if newest_on == "this node" else (OLDER, NEWER)
    await node.store(mine)
    for peer in node.peers.values():
        peer.store(theirs)

    assert await coordinator.read([b"k"], Level.QUORUM) == [NEWER]

    asked = [peer for peer in node.peers.values() if peer.calls_to("read")]
    assert asked, "a quorum of three needs a peer's answer"
    if newest_on == "this node":
        await wait_until(lambda: all(p.records[b"k"] == NEWER for p in asked), GUARD, "the peers' repair")
        assert all(any(c.repair for c in p.calls_to("apply")) for p in asked)
        repaired = len(asked)
    else:
        await wait_until(lambda: node.storage.get(b"k") == NEWER, GUARD, "this node's repair")
        repaired = 1
    assert node.metric("kvnode_read_repairs_total") >= repaired


async def test_a_stalled_replica_makes_the_read_ask_the_next_one(
    three: tuple[Node, Coordinator, RecordingHints],
) -> None:
    """n2 is asked first (the roster's order after n1) and never answers; the read speculates to n3
    long before the coordinator's timeout."""
    node, coordinator, _ = three
    stored = record("k", "v", hlc=3)
    node.peer("n2").stall()
    node.peer("n3").store(stored)
    assert await asyncio.wait_for(coordinator.read([b"k"], Level.QUORUM), GUARD) == [stored]
    assert node.peer("n2").calls_to("read") and node.peer("n3").calls_to("read")


async def test_a_linearizable_read_writes_back_to_a_quorum_before_it_returns(
    three: tuple[Node, Coordinator, RecordingHints],
) -> None:
    """n3 stalls, so the write-back's quorum must include this node: when the read returns, this
    node holds the value it returned (a QUORUM read would only repair it in the background)."""
    node, coordinator, _ = three
    await node.store(OLDER)
    node.peer("n2").store(NEWER)
    node.peer("n3").stall()
    assert await asyncio.wait_for(coordinator.read([b"k"], Level.LINEARIZABLE), GUARD) == [NEWER]
    assert node.storage.get(b"k") == NEWER


async def test_a_linearizable_write_goes_above_the_newest_version_a_quorum_holds(
    three: tuple[Node, Coordinator, RecordingHints],
) -> None:
    """The peers hold a version half a second ahead of this node's clock (within the clock bound).
    A LINEARIZABLE write reads it first and is stamped above it at once."""
    node, coordinator, _ = three
    ahead = record("k", "from the future", hlc=from_ms(physical_ms(node.clock.wall()) + 500), writer="n2")
    for peer in node.peers.values():
        peer.store(ahead)
    written = await put(coordinator, b"k", b"linearizable", Level.LINEARIZABLE)
    assert written.version > ahead.version
    assert node.peer("n2").records[b"k"] == written
    assert await coordinator.read([b"k"], Level.QUORUM) == [written]


async def test_a_superseded_write_is_stamped_again_until_a_read_can_return_it(
    three: tuple[Node, Coordinator, RecordingHints],
) -> None:
    """A QUORUM write stamped below a version the replicas hold would be acknowledged and then
    never read (as an injected far-future version made writes vanish). It is stamped again and
    sent again until the replicas store it: once acknowledged, a read returns it."""
    node, coordinator, _ = three
    ahead = record("k", "newer", hlc=from_ms(physical_ms(node.clock.wall()) + 300), writer="n2")
    for peer in node.peers.values():
        peer.store(ahead)
    written = await put(coordinator, b"k", b"plain")
    assert written.version > ahead.version
    assert await coordinator.read([b"k"], Level.QUORUM) == [written]
    assert [p.records[b"k"] for p in node.peers.values()] == [written, written]


async def test_a_slower_replicas_copy_is_reported_as_work_left_running(
    three: tuple[Node, Coordinator, RecordingHints],
) -> None:
    """The write is answered once a quorum has it; the stalled replica's copy goes on, and the
    server is told, so that it counts the request's memory until that copy ends too."""
    node, coordinator, _ = three
    node.peer("n3").stall()
    left: list[asyncio.Future[object]] = []
    held = lingering.hold_with(left.append)
    try:
        await put(coordinator, b"k", b"v")
    finally:
        lingering.release(held)
    assert len(left) == 3, "one copy per replica"
    assert [t.done() for t in left].count(False) == 1, "only the stalled replica's is still going"
    node.peer("n3").recover()
    await asyncio.wait_for(asyncio.gather(*left), GUARD)


async def test_a_linearizable_write_that_a_concurrent_write_overtook_takes_effect_once(
    three: tuple[Node, Coordinator, RecordingHints],
) -> None:
    """Both peers take a concurrent write of the key just before this one. The ABD read phase
    stamped this write above every write that had finished, so the newer version is a concurrent
    write, ordered after it: this one is acknowledged as it stands. Stamped again (as a QUORUM
    write is), its value would come back after that later write, although a LINEARIZABLE read may
    already have returned it: a violation the chaos suite found."""
    node, coordinator, _ = three
    for peer in node.peers.values():
        peer.overtaken.add(b"k")
    written = await put(coordinator, b"k", b"linearizable", Level.LINEARIZABLE)
    overtaking = node.peer("n2").records[b"k"]
    assert overtaking.value == b"overtaking" and overtaking.version > written.version
    assert [len(p.calls_to("apply")) for p in node.peers.values()] == [1, 1], "sent once, not stamped again"
    for peer in node.peers.values():
        peer.overtaken.clear()
    assert await coordinator.read([b"k"], Level.LINEARIZABLE) == [overtaking]


async def test_a_version_beyond_the_clock_bound_is_refused_not_observed(
    three: tuple[Node, Coordinator, RecordingHints],
) -> None:
    """A version an hour ahead (injected, or from a broken clock) would make every later write of
    the key lose: a LINEARIZABLE write refuses it, and this node's clock does not jump to it."""
    node, coordinator, _ = three
    ahead = record("k", "far future", hlc=from_ms(physical_ms(node.clock.wall()) + 3_600_000), writer="n2")
    for peer in node.peers.values():
        peer.store(ahead)
    before = node.clock.last
    with pytest.raises(ClockAhead, match="ms ahead of this node's clock"):
        await put(coordinator, b"k", b"linearizable", Level.LINEARIZABLE)
    assert node.clock.last < ahead.version.hlc
    assert node.clock.last >= before

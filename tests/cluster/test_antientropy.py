"""Anti-entropy between this node's real store and fake peers: one round makes two replicas that
differ hold the same records, copying both ways with the newer version winning, never spreads
tombstones past the collection horizon, and compares only the partitions the two share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from kvnode.cluster.antientropy import AntiEntropy
from kvnode.cluster.clock import from_ms
from kvnode.core.membership import Membership
from tests.cluster.harness import SELF, Node, WallClock, membership, record, running_node

GRACE = 3600.0
PAIR = membership(["n1", "n2"], rf=2)


@contextlib.asynccontextmanager
async def comparing(
    folder: Path, members: Membership, wall: WallClock | None = None
) -> AsyncIterator[tuple[Node, AntiEntropy]]:
    async with running_node(folder, members, wall=wall) as node:
        yield (
            node,
            AntiEntropy(
                node.id,
                node.storage,
                node.roster,
                node.topology,
                node.clock,
                node.metrics,
                tombstone_grace=GRACE,
            ),
        )


async def test_one_round_converges_two_replicas_both_ways_and_the_newer_version_wins(tmp_path: Path) -> None:
    async with comparing(tmp_path, PAIR) as (node, ae):
        peer = node.peer("n2")
        await node.store(record("a", "mine", hlc=1), record("b", "mine", hlc=5), record("d", "only mine"))
        peer.store(record("a", "theirs", hlc=3), record("b", "theirs", hlc=2), record("c", "only theirs"))

        stats = await ae.run_round()

        expected = {
            b"a": record("a", "theirs", hlc=3),
            b"b": record("b", "mine", hlc=5),
            b"c": record("c", "only theirs"),
            b"d": record("d", "only mine"),
        }
        assert peer.records == expected
        assert {key: node.storage.get(key) for key in expected} == expected
        assert (stats.pushed, stats.pulled) == (2, 2)
        everything = list(range(PAIR.partitions))
        assert node.storage.digests(everything) == await peer.digests(everything)
        assert (await ae.run_round()).differing == 0
        assert node.metric("kvnode_anti_entropy_rounds_total") == 2


async def test_tombstones_older_than_the_horizon_are_not_spread(tmp_path: Path) -> None:
    """Each side collects its old tombstones on its own; copying one back would undo that. A
    tombstone younger than the horizon is a delete still to be spread like any write."""
    wall = WallClock()
    old, young = from_ms(wall.ms - int(2 * GRACE * 1000)), from_ms(wall.ms - 1000)
    async with comparing(tmp_path, PAIR, wall) as (node, ae):
        peer = node.peer("n2")
        await node.store(record("old-mine", hlc=old, tomb=True), record("young-mine", hlc=young, tomb=True))
        peer.store(record("old-theirs", hlc=old, tomb=True))

        await ae.run_round()

        assert set(peer.records) == {b"old-theirs", b"young-mine"}
        assert peer.records[b"young-mine"].tombstone
        assert node.storage.get(b"old-theirs") is None


async def test_a_peer_that_is_down_does_not_stop_the_round(tmp_path: Path) -> None:
    async with comparing(tmp_path, membership(["n1", "n2", "n3"])) as (node, ae):
        node.peer("n2").fail()
        node.peer("n3").store(record("theirs"))
        await node.store(record("mine"))
        await ae.run_round()
        assert node.storage.get(b"theirs") == record("theirs")
        assert set(node.peer("n3").records) == {b"theirs", b"mine"}


async def test_a_round_compares_with_each_peer_only_the_partitions_they_share(tmp_path: Path) -> None:
    members = membership(["n1", "n2", "n3", "n4"], rf=2, joining=["n4"])
    async with comparing(tmp_path, members) as (node, ae):
        await ae.run_round()
        placement = node.topology.placement
        mine = set(placement.held(SELF))
        for peer in node.peers.values():
            asked = {p for call in peer.calls_to("digests") for p in call.partitions}
            assert asked == mine & set(placement.held(peer.id)), peer.id

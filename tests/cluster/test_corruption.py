"""Reads never serve a copy that failed its checksum: the coordinator counts it as no answer, asks
another replica, and repairs the copy with the same version; with no intact copy to be had the read
answers DATA_LOSS. This node's store is real and its copy really rots on disk; the peers are fakes
that keep the same rules (``FakePeer.corrupt``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kvnode.cluster.coordinator import Coordinator
from kvnode.core.errors import DataLoss, Unavailable
from kvnode.core.levels import Level
from kvnode.core.membership import Membership
from kvnode.storage.schema import Corrupt
from kvnode.testing.damage import flip_byte
from kvnode.testing.processes import wait_until
from tests.cluster.fakes import RecordingHints
from tests.cluster.harness import Node, membership, record, running_node

TIMEOUT = 30.0
GUARD = 20.0
STORED = record("k", "<<the value that rots>>", hlc=5, writer="n2")


@contextlib.asynccontextmanager
async def coordinating(folder: Path, members: Membership) -> AsyncIterator[tuple[Node, Coordinator]]:
    async with running_node(folder, members) as node:
        coordinator = Coordinator(
            node.id, node.topology, node.roster, node.clock, RecordingHints(), node.metrics, timeout=TIMEOUT
        )
        try:
            yield node, coordinator
        finally:
            await coordinator.close()


async def rotten_here(node: Node) -> None:
    """This node holds STORED, with one bit of its value flipped on disk."""
    await node.store(STORED)
    flip_byte(node.storage.path / "data.mdb", STORED.value, offset=5)
    assert isinstance(node.storage.get(STORED.key), Corrupt)


async def read(coordinator: Coordinator, level: Level) -> object:
    return (await asyncio.wait_for(coordinator.read([STORED.key], level), GUARD))[0]


@pytest.mark.parametrize("level", [Level.ONE, Level.QUORUM, Level.LINEARIZABLE])
async def test_a_corrupt_copy_here_is_read_around_and_repaired(tmp_path: Path, level: Level) -> None:
    async with coordinating(tmp_path, membership(["n1", "n2", "n3"])) as (node, coordinator):
        await rotten_here(node)
        for peer in node.peers.values():
            peer.store(STORED)

        assert await read(coordinator, level) == STORED

        await wait_until(lambda: node.storage.get(STORED.key) == STORED, GUARD, "the repair of this node")
        # Counted once the repair's commit has been acknowledged, a moment after it is visible.
        await wait_until(
            lambda: node.metric("kvnode_corrupt_repairs_total", by="read") == 1, GUARD, "the repair counted"
        )
        assert node.metric("kvnode_read_repairs_total") == 0  # no replica was merely stale


async def test_a_corrupt_copy_on_a_peer_is_not_counted_and_another_is_asked(tmp_path: Path) -> None:
    async with coordinating(tmp_path, membership(["n1", "n2", "n3"])) as (node, coordinator):
        await node.store(STORED)
        for peer in node.peers.values():
            peer.store(STORED)
        first = node.roster.preferred(("n2", "n3"))[0]
        bad, good = sorted(node.peers.values(), key=lambda p: p.id != first)
        bad.corrupt.add(STORED.key)
        await node.store(record("k", "a newer value only here", hlc=9, writer="n1"))
        # QUORUM needs two answers: this node's and, the first peer's copy being corrupt, the other's.

        newer = await read(coordinator, Level.QUORUM)

        assert newer == record("k", "a newer value only here", hlc=9, writer="n1")
        assert [c.keys for c in good.calls_to("read")] == [(STORED.key,)]
        await wait_until(lambda: not bad.corrupt, GUARD, "the repair of the corrupt peer")
        assert bad.records[STORED.key] == newer
        assert all(c.repair for c in bad.calls_to("apply"))


async def test_a_node_alone_answers_data_loss_and_keeps_the_copy(tmp_path: Path) -> None:
    async with coordinating(tmp_path, membership(["n1"], rf=1)) as (node, coordinator):
        await rotten_here(node)
        for level in (Level.ONE, Level.QUORUM, Level.ALL, Level.LINEARIZABLE):
            with pytest.raises(DataLoss, match="failed its checksum"):
                await read(coordinator, level)
        assert isinstance(node.storage.get(STORED.key), Corrupt)  # kept: it may yet be restored


async def test_data_loss_only_when_every_replica_answered(tmp_path: Path) -> None:
    async with coordinating(tmp_path, membership(["n1", "n2", "n3"])) as (node, coordinator):
        await rotten_here(node)
        n2, n3 = node.peer("n2"), node.peer("n3")
        for peer in (n2, n3):
            peer.store(STORED)
            peer.corrupt.add(STORED.key)
        with pytest.raises(DataLoss, match="0 of 3 replicas answered with an intact copy and 3 with a copy"):
            await read(coordinator, Level.ONE)

        n3.fail()  # one replica does not answer: its copy may be intact, so try again later
        with pytest.raises(Unavailable, match="0 of 3 replicas answered with an intact copy and 2 with"):
            await read(coordinator, Level.QUORUM)


async def test_a_corrupt_copy_of_a_key_no_other_replica_holds_reads_as_absent(tmp_path: Path) -> None:
    async with coordinating(tmp_path, membership(["n1", "n2", "n3"])) as (node, coordinator):
        await rotten_here(node)
        assert await read(coordinator, Level.QUORUM) is None
        assert not any(peer.calls_to("apply") for peer in node.peers.values())

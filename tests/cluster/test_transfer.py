"""Partition transfers between this node's real store and fake peers: a join pulls exactly the
partitions it gains from enough sources and keeps the newest version of each key; a decommission
pushes what it loses and verifies it on the new owners; a rebuild waits for its sources."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from kvnode.api.v1 import admin_pb2
from kvnode.cluster import transfer
from kvnode.cluster.clock import from_ms
from kvnode.cluster.transfer import TransferManager, TransferStatus, sources_needed
from kvnode.core.errors import FailedPrecondition
from kvnode.core.membership import Membership
from kvnode.core.placement import partition_of
from kvnode.core.records import Record
from kvnode.testing.processes import wait_until
from tests.cluster.harness import SELF, Node, membership, record, running_node

WAIT = 20.0
HORIZON = from_ms(1_000_000)
JOINING = membership(["n1", "n2", "n3", "n4"], joining=["n1"])
LEAVING = membership(["n1", "n2", "n3", "n4"], leaving=["n1"])
KEYS = [f"key-{i}".encode() for i in range(48)]


@contextlib.asynccontextmanager
async def transferring(
    folder: Path, members: Membership, horizon: Callable[[], int] = lambda: HORIZON
) -> AsyncIterator[tuple[Node, TransferManager]]:
    async with running_node(folder, members) as node:
        manager = TransferManager(node.id, node.roster, node.topology, node.metrics, horizon)
        try:
            yield node, manager
        finally:
            await manager.close()


async def finished(manager: TransferManager) -> TransferStatus:
    return await asyncio.wait_for(manager.wait(), WAIT)


def versions(key: bytes, *hlcs: int) -> list[Record]:
    """One record of ``key`` per hlc, each with a value naming its version."""
    return [record(key, f"{key.decode()}@{hlc}", hlc=HORIZON + hlc) for hlc in hlcs]


def fetched(node: Node) -> dict[int, set[str]]:
    """For each partition fetched from a peer, the peers it was fetched from."""
    out: dict[int, set[str]] = {}
    for peer in node.peers.values():
        for call in peer.calls_to("fetch_partition"):
            out.setdefault(call.partitions[0], set()).add(peer.id)
    return out


async def test_a_join_pulls_exactly_its_gained_partitions_keeping_the_newest_versions(tmp_path: Path) -> None:
    async with transferring(tmp_path, JOINING) as (node, manager):
        placement = node.topology.placement
        gained = set(placement.gained(SELF))
        for key in KEYS:  # each source holds another version; n3's is the newest
            n2, n3, n4 = versions(key, 1, 3, 2)
            node.peer("n2").store(n2)
            node.peer("n3").store(n3)
            node.peer("n4").store(n4)
        collected = record("collected", hlc=HORIZON - 1, tomb=True)
        for peer in node.peers.values():
            peer.store(collected)

        manager.start("join")
        status = await finished(manager)

        ours = [k for k in KEYS if placement.partition(k) in gained]
        assert status.state == admin_pb2.TRANSFER_STATE_DONE
        assert (status.partitions_total, status.partitions_done) == (len(gained), len(gained))
        assert status.records_copied == len(ours)
        asked = fetched(node)
        assert set(asked) == gained
        assert all(len(peers) >= sources_needed(3) for peers in asked.values())
        assert node.storage.get_many(KEYS) == [versions(k, 3)[0] if k in ours else None for k in KEYS]
        assert node.storage.get(collected.key) is None  # past the horizon: not spread
        assert node.metric("kvnode_transfer_records_total", kind="join") == len(ours)

        again = manager.start("join")  # done for this epoch: reported, not run again
        assert again == status and fetched(node) == asked


@pytest.mark.parametrize("down", [["n2"], ["n2", "n3"]], ids=["one-source-down", "two-sources-down"])
async def test_a_join_needs_enough_sources_to_see_every_acknowledged_write(
    tmp_path: Path, down: list[str]
) -> None:
    """Three sources, a write quorum of two: any two of them have seen every acknowledged write."""
    async with transferring(tmp_path, JOINING) as (node, manager):
        for peer_id in down:
            node.peer(peer_id).fail()
        manager.start("join")
        status = await finished(manager)
        if len(down) < 2:
            assert status.state == admin_pb2.TRANSFER_STATE_DONE
        else:
            first = node.topology.placement.gained(SELF)[0]
            assert status.state == admin_pb2.TRANSFER_STATE_FAILED
            assert re.match(rf"partition {first}: 1 of 3 replicas answered, 2 needed", status.error)


async def test_a_transfer_of_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    async with transferring(tmp_path, JOINING) as (_, manager):
        with pytest.raises(
            FailedPrecondition, match="node n1 is JOINING in membership epoch 1; it must be LEAVING"
        ):
            manager.start("decommission")


async def test_a_decommission_pushes_its_lost_partitions_and_verifies_them(tmp_path: Path) -> None:
    async with transferring(tmp_path, LEAVING) as (node, manager):
        placement = node.topology.placement
        lost = placement.lost(SELF)
        for key in KEYS:
            older, newer = versions(key, 1, 2)
            await node.store(newer)
            for peer in node.peers.values():
                peer.store(older)

        manager.start("decommission")
        status = await finished(manager)

        assert status.state == admin_pb2.TRANSFER_STATE_DONE, status.error
        for p in lost:
            old, new = placement.write_sets(p)
            (gainer,) = set(new) - set(old)
            held = node.peer(gainer).records
            assert all(held[k] == versions(k, 2)[0] for k in KEYS if placement.partition(k) == p)
            assert any(call.partitions == (p,) for call in node.peer(gainer).calls_to("key_versions"))


async def test_a_decommission_fails_naming_the_partition_a_new_owner_lacks(tmp_path: Path) -> None:
    async with transferring(tmp_path, LEAVING) as (node, manager):
        key = node.key_where(lambda old, new: SELF in old and SELF not in new)
        partition = partition_of(key, LEAVING.partitions)
        old, new = node.topology.placement.write_sets(partition)
        (gainer,) = set(new) - set(old)
        await node.store(record(key, hlc=7))
        node.peer(gainer).lossy.add(key)  # acknowledges the key, keeps nothing

        manager.start("decommission")
        status = await finished(manager)

        assert status.state == admin_pb2.TRANSFER_STATE_FAILED
        assert f"{gainer} lacks key {key!r} of partition {partition}" in status.error


async def test_a_rebuild_retries_until_its_sources_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "REBUILD_RETRY", 0.01)
    async with transferring(tmp_path, membership(["n1", "n2", "n3"])) as (node, manager):
        stored = record("k", hlc=HORIZON + 1)
        for peer in node.peers.values():
            peer.store(stored)
            peer.fail()

        manager.start_rebuild()
        await wait_until(
            lambda: all(len(p.calls_to("fetch_partition")) >= 2 for p in node.peers.values()),
            WAIT,
            "a second attempt at every source",
        )
        assert manager.status.state == admin_pb2.TRANSFER_STATE_RUNNING
        for peer in node.peers.values():
            peer.recover()
        status = await finished(manager)

        assert status.state == admin_pb2.TRANSFER_STATE_DONE
        assert status.partitions_done == len(node.topology.placement.held(SELF))
        assert node.storage.get(b"k") == stored

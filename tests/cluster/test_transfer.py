"""Partition transfers between this node's real store and fake peers: a join pulls exactly the
partitions it gains from enough sources and keeps the newest version of each key; a decommission
pushes what it loses and verifies it on the new owners; a rebuild waits for its sources. Partitions
many pages long stream through with a bounded number of records held at once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvnode.api.v1 import admin_pb2
from kvnode.cluster import transfer
from kvnode.cluster.clock import from_ms
from kvnode.cluster.replica import ApplyItem, Replica
from kvnode.cluster.transfer import TransferManager, TransferStatus, sources_needed
from kvnode.core.errors import FailedPrecondition
from kvnode.core.membership import Membership
from kvnode.core.placement import partition_of
from kvnode.core.records import Record
from kvnode.testing.processes import wait_until
from tests.cluster.fakes import FakePeer
from tests.cluster.harness import SELF, Node, membership, record, running_node
from tests.cluster.histories import newest_copies, replica_copies

WAIT = 20.0
HORIZON = from_ms(1_000_000)
JOINING = membership(["n1", "n2", "n3", "n4"], joining=["n1"])
LEAVING = membership(["n1", "n2", "n3", "n4"], leaving=["n1"])
KEYS = [f"key-{i}".encode() for i in range(48)]
MANY_KEYS = [f"many-{i:04d}".encode() for i in range(480)]  # about 30 a partition
SMALL_PAGE = 4  # so that each partition takes several pages from every source


@contextlib.asynccontextmanager
async def transferring(
    folder: Path,
    members: Membership,
    horizon: Callable[[], int] = lambda: HORIZON,
    *,
    page: int = transfer.PAGE,
) -> AsyncIterator[tuple[Node, TransferManager]]:
    async with running_node(folder, members) as node:
        manager = TransferManager(node.id, node.roster, node.topology, node.metrics, horizon, page=page)
        try:
            yield node, manager
        finally:
            await manager.close()


async def finished(manager: TransferManager, timeout: float = WAIT) -> TransferStatus:
    return await asyncio.wait_for(manager.wait(), timeout)


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
            ours = [k for k in KEYS if placement.partition(k) == p]
            assert all(held[k] == versions(k, 2)[0] for k in ours)
            verified = any(call.partitions == (p,) for call in node.peer(gainer).calls_to("key_versions"))
            assert verified == bool(ours)  # an empty partition has nothing to check


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


def surviving(newest: dict[bytes, Record], partitions: set[int], node: Node) -> dict[bytes, Record]:
    """What a transfer of ``partitions`` must copy: the newest copy of each key, unless it is a
    tombstone past the horizon (then the key is not copied at all, not even an older value)."""
    placement = node.topology.placement
    return {
        k: r
        for k, r in newest.items()
        if placement.partition(k) in partitions and not (r.tombstone and r.version.hlc < HORIZON)
    }


def kept(node: Node, keys: list[bytes]) -> dict[bytes, Record]:
    return {r.key: r for r in node.storage.get_many(keys) if isinstance(r, Record)}


def fail_after_first_page(monkeypatch: pytest.MonkeyPatch, peer: FakePeer) -> None:
    """From its second page on, every call to ``peer`` fails: a source lost midway."""
    fetch = peer.fetch_partition

    async def failing(partition: int, after: bytes, limit: int) -> tuple[list[Record], bool]:
        if after:
            peer.fail()
        return await fetch(partition, after, limit)

    monkeypatch.setattr(peer, "fetch_partition", failing)


async def test_a_join_streams_partitions_many_pages_long_keeping_the_newest_versions(tmp_path: Path) -> None:
    async with transferring(tmp_path, JOINING, page=SMALL_PAGE) as (node, manager):
        copies = replica_copies(MANY_KEYS, ["n2", "n3", "n4"], first_hlc=HORIZON - 8)
        for peer_id, records in copies.items():
            node.peer(peer_id).store(*records)
        newest = newest_copies(copies)
        collected = [r for r in newest.values() if r.tombstone and r.version.hlc < HORIZON]
        assert collected and any(r.tombstone for r in newest.values() if r not in collected)
        gained = set(node.topology.placement.gained(SELF))

        manager.start("join")
        status = await finished(manager)

        expected = surviving(newest, gained, node)
        assert status.state == admin_pb2.TRANSFER_STATE_DONE, status.error
        assert (status.partitions_done, status.records_copied) == (len(gained), len(expected))
        assert node.metric("kvnode_transfer_records_total", kind="join") == len(expected)
        assert kept(node, MANY_KEYS) == expected
        pages = sum(len(peer.calls_to("fetch_partition")) for peer in node.peers.values())
        assert pages > 3 * 3 * len(gained)  # several pages from each source for each partition


@pytest.mark.parametrize("lost", [["n2"], ["n2", "n3"]], ids=["one-source-lost", "two-sources-lost"])
async def test_a_source_lost_midway_is_dropped_and_the_partition_fails_below_the_quorum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lost: list[str]
) -> None:
    """Any two of the three sources hold every acknowledged write, so a join goes on without a
    source that fails after its first page, and fails the partition once two are gone."""
    async with transferring(tmp_path, JOINING, page=SMALL_PAGE) as (node, manager):
        copies = replica_copies(MANY_KEYS, ["n3", "n4"], first_hlc=HORIZON)
        node.peer("n2").store(*copies["n3"])  # n2 holds nothing the other two lack
        for peer_id, records in copies.items():
            node.peer(peer_id).store(*records)
        for peer_id in lost:
            fail_after_first_page(monkeypatch, node.peer(peer_id))

        manager.start("join")
        status = await finished(manager)

        gained = set(node.topology.placement.gained(SELF))
        if len(lost) == 1:
            assert status.state == admin_pb2.TRANSFER_STATE_DONE, status.error
            assert kept(node, MANY_KEYS) == surviving(newest_copies(copies), gained, node)
        else:
            failed = re.match(r"partition (\d+): 1 of 3 replicas answered, 2 needed \(peer n2", status.error)
            assert status.state == admin_pb2.TRANSFER_STATE_FAILED and failed, status.error
            assert int(failed[1]) in gained and status.partitions_done < len(gained)


def gainer_of(node: Node, partition: int) -> FakePeer:
    """The one new owner of a partition this node leaves."""
    old, new = node.topology.placement.write_sets(partition)
    (gainer,) = set(new) - set(old)
    return node.peer(gainer)


async def test_a_decommission_streams_and_verifies_partitions_many_pages_long(tmp_path: Path) -> None:
    """The new owners may hold newer versions and other keys (writes of the transition): they pass
    the verification, which asks for every copied record, at least as new."""
    async with transferring(tmp_path, LEAVING, page=SMALL_PAGE) as (node, manager):
        placement = node.topology.placement
        copies = {  # each member holds copies of the keys of the partitions it replicates
            member: [r for r in records if member in placement.read_replicas(placement.partition(r.key))]
            for member, records in replica_copies(
                MANY_KEYS, [m.id for m in LEAVING.members], first_hlc=HORIZON - 8
            ).items()
        }
        await node.store(*copies[SELF])
        for peer in node.peers.values():
            peer.store(*copies[peer.id])
        lost = set(placement.lost(SELF))
        ahead = [k for k in MANY_KEYS[::7] if placement.partition(k) in lost]
        for key in ahead:  # a newer write of the key, and a key of its partition that only the owner has
            partition = placement.partition(key)
            other = next(
                k for k in (b"%s+%d" % (key, i) for i in range(999)) if placement.partition(k) == partition
            )
            gainer_of(node, partition).store(
                record(key, "newer", hlc=HORIZON + 100), record(other, "other", hlc=HORIZON + 100)
            )

        manager.start("decommission")
        status = await finished(manager)

        expected = surviving(newest_copies(copies), lost, node)
        assert status.state == admin_pb2.TRANSFER_STATE_DONE, status.error
        assert status.records_copied == len(expected)  # one new owner for each lost partition
        for key, rec in expected.items():
            held = gainer_of(node, placement.partition(key)).records[key]
            assert held == (record(key, "newer", hlc=HORIZON + 100) if key in ahead else rec)


@pytest.mark.parametrize("first", ["missing", "older"])
async def test_a_decommission_names_the_first_key_a_new_owner_lacks_or_holds_older(
    tmp_path: Path, first: str
) -> None:
    async with transferring(tmp_path, LEAVING, page=SMALL_PAGE) as (node, manager):
        partition = node.topology.placement.lost(SELF)[0]
        keys = keys_in(partition, 40, node)
        await node.store(*(record(k, hlc=HORIZON + 7) for k in keys))
        gainer = gainer_of(node, partition)
        missing, older = (keys[25], keys[31]) if first == "missing" else (keys[31], keys[25])
        gainer.store(record(older, hlc=HORIZON + 3))
        gainer.lossy.update({missing, older})  # acknowledged, not kept

        manager.start("decommission")
        status = await finished(manager)

        assert status.state == admin_pb2.TRANSFER_STATE_FAILED
        assert status.error == (
            f"verification failed: {gainer.id} lacks key {keys[25]!r} of partition {partition} "
            f"at version {(HORIZON + 7, 'w')}"
        )


def keys_in(partition: int, count: int, node: Node) -> list[bytes]:
    """The first ``count`` keys of a partition, in key order."""
    placement = node.topology.placement
    keys = (b"big-%06d" % i for i in range(1_000_000))
    return list(itertools.islice((k for k in keys if placement.partition(k) == partition), count))


@dataclass
class Flow:
    """Records that sources handed out and targets were given, and the most of them in between:
    the records a transfer held at once, when nothing is dropped on the way."""

    fetched: int = 0
    written: int = 0
    most_held: int = 0

    def watch(self, monkeypatch: pytest.MonkeyPatch, replica: Replica) -> None:
        fetch, apply = replica.fetch_partition, replica.apply

        async def counted_fetch(partition: int, after: bytes, limit: int) -> tuple[list[Record], bool]:
            page, exhausted = await fetch(partition, after, limit)
            self.fetched += len(page)
            self.most_held = max(self.most_held, self.fetched - self.written)
            return page, exhausted

        async def counted_apply(items: list[ApplyItem], *, repair: bool = False) -> object:
            self.written += len(items)
            return await apply(items, repair=repair)

        monkeypatch.setattr(replica, "fetch_partition", counted_fetch)
        monkeypatch.setattr(replica, "apply", counted_apply)


@pytest.mark.parametrize(
    ("kind", "members"), [("join", JOINING), ("decommission", LEAVING)], ids=["join", "decommission"]
)
async def test_a_transfer_holds_at_most_a_page_per_source_whatever_the_partition_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, members: Membership
) -> None:
    """A source's next page is fetched once the batch before was written, so no more than a page
    per source is ever fetched and not yet written. Each key is on one source only (any two
    sources answer), so no record is dropped on the way and that count is what the transfer
    holds."""
    async with transferring(tmp_path, members, page=SMALL_PAGE) as (node, manager):
        placement = node.topology.placement
        moving = placement.gained(SELF) if kind == "join" else placement.lost(SELF)
        keys = keys_in(moving[0], 400, node)  # a hundred pages: 33 from each source
        shares = {  # each of the partition's replicas holds a third of its keys
            owner: [record(k, hlc=HORIZON + 1) for k in keys[i::3]]
            for i, owner in enumerate(placement.read_replicas(moving[0]))
        }
        if SELF in shares:
            await node.store(*shares.pop(SELF))
        for owner, records in shares.items():
            node.peer(owner).store(*records)
        flow = Flow()
        replicas: list[Replica] = [node.local, *node.peers.values()]
        for replica in replicas:
            flow.watch(monkeypatch, replica)

        manager.start(kind)
        status = await finished(manager)

        assert status.state == admin_pb2.TRANSFER_STATE_DONE, status.error
        assert flow.fetched == flow.written == status.records_copied == len(keys)
        print(f"{kind}: at most {flow.most_held} of {len(keys)} records held, pages of {SMALL_PAGE}")
        assert flow.most_held <= 3 * SMALL_PAGE < len(keys) // 30


def fresh_values(monkeypatch: pytest.MonkeyPatch, peer: FakePeer) -> None:
    """Hand out each page's values as new bytes, as a real link decodes them from a message."""
    fetch = peer.fetch_partition

    async def copying(partition: int, after: bytes, limit: int) -> tuple[list[Record], bool]:
        page, exhausted = await fetch(partition, after, limit)
        return [r._replace(value=bytes(memoryview(r.value))) for r in page], exhausted

    monkeypatch.setattr(peer, "fetch_partition", copying)


@contextlib.contextmanager
def traced() -> Iterator[Callable[[], int]]:
    """Trace this process's allocations; the callable gives the peak in bytes since its last call."""
    tracemalloc.start()

    def peak() -> int:
        most = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        return most

    try:
        yield peak
    finally:
        tracemalloc.stop()


async def test_a_join_of_a_large_partition_holds_a_few_pages_of_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peak of the join, less what one write through the committer costs anyway (it reads the
    writer's replies 1 MiB at a time), stays within a few pages of values, while the sources send
    7 MB (reading whole partitions first, as transfers once did, peaked at 12 MB here)."""
    page, value_bytes, count = 8, 4096, 600
    async with transferring(tmp_path, JOINING, page=page) as (node, manager):
        keys = keys_in(node.topology.placement.gained(SELF)[0], count, node)
        records = [record(k, bytes(value_bytes), hlc=HORIZON + 1) for k in keys]
        for peer in node.peers.values():
            peer.store(*records)
            fresh_values(monkeypatch, peer)

        with traced() as peak:
            await node.store(record("unrelated", hlc=HORIZON + 1))
            writing = peak()
            manager.start("join")
            status = await finished(manager, 6 * WAIT)  # tracing makes every allocation slow
            held = peak() - writing

        assert status.state == admin_pb2.TRANSFER_STATE_DONE, status.error
        assert kept(node, keys) == {r.key: r for r in records}
        page_each = 3 * page * value_bytes  # a page of values from each of the three sources
        print(
            f"join peak {held} bytes: {held / page_each:.2f} pages from each source, of {count // page} each"
        )
        assert held < 4 * page_each < 3 * count * value_bytes // 10

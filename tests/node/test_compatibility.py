"""Stores and nodes from before record checksums keep working: a data directory the old kvnode wrote
reads as it was and gets checksums from the scrub, and a cluster of old nodes upgraded one node at a
time keeps serving, losing no acknowledged write."""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvnode.client import AsyncKVClient
from kvnode.core.records import Record
from kvnode.storage.engine import Storage
from kvnode.storage.ops import Scrubbed
from kvnode.storage.schema import has_checksum
from kvnode.testing.processes import ProcessCluster, wait_for, wait_until
from tests.node import pre_checksum
from tests.node.pre_checksum import HINTED, NODE_ID, PARTITIONS, PEER_ID, expected

REPO = Path(__file__).resolve().parents[2]


def raw_records(storage: Storage) -> dict[bytes, bytes]:
    with storage.reading() as txn:
        return dict(txn.cursor(db=storage.dbs.data).iternext())


def test_a_store_written_before_checksums_reads_and_gets_them_from_the_scrub(tmp_path: Path) -> None:
    lmdb = pre_checksum.unpack(tmp_path / NODE_ID) / "lmdb"
    storage = Storage(lmdb, partitions=PARTITIONS, map_size=1 << 24)
    try:
        assert not any(has_checksum(raw) for raw in raw_records(storage).values())
        held = expected()
        keys = sorted(held)
        records = storage.get_many(keys)
        intact = [r for r in records if isinstance(r, Record)]
        assert len(intact) == len(held)
        assert {r.key: (None if r.tombstone else r.value) for r in intact} == held
        assert sorted(h.record.key for h in storage.hints(PEER_ID) if h.record) == HINTED
        digests = storage.digests()

        checks = [storage.check_partition(p) for p in range(PARTITIONS)]
        assert all(c.digest_ok and not c.corrupt for c in checks)
        assert sum(len(c.unchecked) for c in checks) == len(held)
        upgraded = sum(storage.write(Scrubbed(c.partition, c.unchecked, recount=False).run) for c in checks)

        assert upgraded == len(held)
        assert all(has_checksum(raw) for raw in raw_records(storage).values())
        assert storage.get_many(keys) == records
        assert storage.digests() == digests  # same records, same identities
    finally:
        storage.close()


async def test_the_new_kvnode_serves_an_old_data_directory_and_upgrades_it(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, ids=[NODE_ID, PEER_ID], replication_factor=2, partitions=PARTITIONS)
    with cluster:
        pre_checksum.unpack(cluster[NODE_ID].data_dir)
        cluster[NODE_ID].extra_args = ["--scrub-interval", "1s"]
        cluster.start(NODE_ID)  # kv-1 stays down: kv-0 serves ONE reads and writes alone
        held = expected()
        async with AsyncKVClient([cluster[NODE_ID].address], consistency="ONE", timeout=10) as client:
            for key, value in held.items():
                got = await client.get(key)
                assert (None if got is None else got.value) == value, key
            await client.put(b"new", b"written by the new build")
        wait_for(
            lambda: f"{len(held) + 1} records checked" in cluster[NODE_ID].log_tail(100),
            30,
            "a scrub pass over every record",
        )
        assert cluster.terminate(NODE_ID) == 0
    storage = Storage(cluster[NODE_ID].data_dir / "lmdb", partitions=PARTITIONS, map_size=1 << 24)
    try:
        raws = raw_records(storage)
        assert all(has_checksum(raw) for raw in raws.values())
        assert len(raws) == len(held) + 1
    finally:
        storage.close()


@pytest.fixture(scope="module")
def old_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The code on main just before checksums, from this repository's history."""
    folder = tmp_path_factory.mktemp("kvnode-before-checksums")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", pre_checksum.COMMIT], capture_output=True
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {pre_checksum.COMMIT} is not in this checkout's history (a shallow clone?)")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder


class Workload:
    """Writes new keys and reads back acknowledged ones at QUORUM without a pause, through a client
    that fails over between the nodes; counts what failed and what read wrong."""

    def __init__(self, client: AsyncKVClient) -> None:
        self.client = client
        self.acked: dict[bytes, bytes] = {}
        self.failures: list[str] = []
        self.ops = 0
        self.phase = ""
        self._rng = random.Random(7)

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            key, value = f"rolling-{n:05}".encode(), f"value-{n}".encode()
            try:
                await self.client.put(key, value)
                self.acked[key] = value
                probe = self._rng.choice(list(self.acked))
                got = await self.client.get(probe)
                if got is None or got.value != self.acked[probe]:
                    self.failures.append(f"read {probe!r}: {got}")
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                self.failures.append(f"{self.phase}: {type(exc).__name__}: {exc}")
            self.ops += 1


@contextlib.contextmanager
def started(cluster: ProcessCluster) -> Iterator[ProcessCluster]:
    with cluster:
        cluster.start()
        yield cluster


async def test_a_mixed_cluster_keeps_serving_through_a_rolling_upgrade(
    tmp_path: Path, old_checkout: Path
) -> None:
    with started(ProcessCluster(tmp_path, size=3, source=old_checkout)) as cluster:
        async with AsyncKVClient(cluster.endpoints, consistency="QUORUM", timeout=20) as client:
            load = Workload(client)
            stop = asyncio.Event()
            running = asyncio.create_task(load.run(stop))
            for node in cluster.nodes:
                before = load.ops
                load.phase = f"stopping {node.node_id}"
                await asyncio.to_thread(cluster.terminate, node.node_id)
                load.phase = f"starting {node.node_id}"
                cluster.source = None  # the nodes started from now on run this checkout
                await asyncio.to_thread(cluster.start, node.node_id)
                mark = load.ops
                load.phase = f"{node.node_id} upgraded"
                target = max(mark, before) + 50  # traffic through the mixed cluster
                await wait_until(lambda t=target: load.ops >= t, 60, "50 requests to the mixed cluster")
            stop.set()
            await running

            # The old build answers a call in flight CANCELLED when SIGTERM stops it (this build
            # does not: the same rolling restart of new nodes sees no failure at all). Those are
            # the stopping old node's own; nothing else may fail.
            by_the_old_build = [f for f in load.failures if f.startswith("stopping") and "CANCELLED" in f]
            assert [f for f in load.failures if f not in by_the_old_build] == []
            assert len(by_the_old_build) <= 3
            assert len(load.acked) > 150
            for key, value in load.acked.items():
                got = await client.get(key, consistency="ALL")
                assert got is not None and got.value == value, key

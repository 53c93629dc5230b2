"""Real kvnode processes on really damaged data: a truncated data file or a broken meta page is
refused at start with a clear message and a non-zero exit (never a SIGBUS); a node with peers sets
it aside and rebuilds from them instead; a record that rots on disk is never served (DATA_LOSS
alone, the other replicas' copy in a cluster, and the rotten copy repaired)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc, types_pb2
from kvnode.storage.engine import Storage
from kvnode.storage.schema import Corrupt
from kvnode.testing.damage import break_meta_page, data_file, flip_byte, truncate
from kvnode.testing.processes import ProcessCluster, wait_for
from tests.node.test_node_process import put_many

ROTTING = b"<<this value rots on disk>>"
ONE = types_pb2.CONSISTENCY_ONE


def start_alone(cluster: ProcessCluster) -> subprocess.CompletedProcess[str]:
    """Run the (only) node of ``cluster`` in the foreground until it exits."""
    return subprocess.run(cluster.command(cluster[0]), capture_output=True, text=True, timeout=60)


def refused(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode == 1, result  # exit(1), not -SIGBUS
    assert result.returncode != -signal.SIGBUS
    assert "Traceback" not in result.stderr, result.stderr
    assert "kvnode: error:" in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("damage", "phrase"),
    [
        (truncate, "is truncated: it holds"),
        (break_meta_page, "meta page 0 has magic 0x0"),
        (lambda path: break_meta_page(path, 1), "meta page 1 has magic 0x0"),
    ],
    ids=["truncated", "meta-page-0", "meta-page-1"],
)
async def test_a_node_alone_refuses_a_damaged_data_file(
    tmp_path: Path, damage: Callable[[Path], object], phrase: str
) -> None:
    with ProcessCluster(tmp_path, size=1) as cluster:
        cluster.start()
        assert len(await put_many(cluster[0].address, 500)) == 500
        assert cluster.terminate(0) == 0
        path = data_file(cluster[0].data_dir)
        damage(path)
        before = path.read_bytes()

        result = start_alone(cluster)

        refused(result, phrase, "has no other replica to rebuild it from", "restore a backup")
        assert path.read_bytes() == before  # kept as it was, for inspection or recovery
        assert not list(cluster[0].data_dir.glob("damaged-*"))


async def test_a_node_with_peers_sets_a_damaged_file_aside_and_rebuilds(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path, size=3) as cluster:
        cluster.start()
        acked = await put_many(cluster[0].address, 500)
        assert len(acked) == 500
        assert cluster.terminate(2) == 0
        truncate(data_file(cluster[2].data_dir))

        cluster.start(2)  # serving (health SERVING) only once the rebuild is done

        log = cluster[2].log_tail(200)
        assert "is truncated" in log and "will rebuild from its peers" in log
        assert "rebuild finished" in log
        (aside,) = cluster[2].data_dir.glob("damaged-*")
        assert (aside / "data.mdb").exists()
        async with grpc.aio.insecure_channel(cluster[2].address) as channel:
            kv = kv_pb2_grpc.KVStub(channel)
            for key in acked[:200]:  # ONE reads answer from this node's own store
                reply = await kv.Get(kv_pb2.GetRequest(key=key, consistency=ONE), timeout=10)
                assert reply.kv.value == b"value-" + key


async def test_a_rotten_record_on_a_node_alone_answers_data_loss(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path, size=1) as cluster:
        cluster.start()
        async with grpc.aio.insecure_channel(cluster[0].address) as channel:
            kv = kv_pb2_grpc.KVStub(channel)
            await kv.Put(kv_pb2.PutRequest(key=b"rots", value=ROTTING), timeout=10)
            await kv.Put(kv_pb2.PutRequest(key=b"fine", value=b"fine"), timeout=10)
            flip_byte(data_file(cluster[0].data_dir), ROTTING, offset=4)

            with pytest.raises(grpc.aio.AioRpcError) as lost:
                await kv.Get(kv_pb2.GetRequest(key=b"rots"), timeout=10)
            assert lost.value.code() == grpc.StatusCode.DATA_LOSS
            assert "failed its checksum" in (lost.value.details() or "")
            assert (await kv.Get(kv_pb2.GetRequest(key=b"fine"), timeout=10)).kv.value == b"fine"
            scanned = await kv.Scan(kv_pb2.ScanRequest(limit=10), timeout=10)
            assert [r.key for r in scanned.kvs] == [b"fine"]
        assert cluster[0].running


async def test_a_rotten_copy_in_a_cluster_is_read_around_and_repaired(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path, size=3) as cluster:
        cluster.start()
        async with grpc.aio.insecure_channel(cluster[0].address) as channel:
            kv = kv_pb2_grpc.KVStub(channel)
            everywhere = kv_pb2.PutRequest(key=b"rots", value=ROTTING, consistency=types_pb2.CONSISTENCY_ALL)
            await kv.Put(everywhere, timeout=10)
            flip_byte(data_file(cluster[0].data_dir), ROTTING, offset=4)

            for consistency in (ONE, types_pb2.CONSISTENCY_QUORUM):
                reply = await kv.Get(kv_pb2.GetRequest(key=b"rots", consistency=consistency), timeout=10)
                assert reply.kv.value == ROTTING

        cluster.terminate(0)
        storage = Storage(cluster[0].data_dir / "lmdb", partitions=cluster.partitions, map_size=1 << 24)
        try:
            repaired = storage.get(b"rots")
        finally:
            storage.close()
        assert not isinstance(repaired, Corrupt) and repaired is not None and repaired.value == ROTTING
        assert "failed its checksum" in cluster[0].log_tail(100)


async def test_a_node_rebuilding_a_damaged_file_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    """The data set aside is copied back from the peers even in a cluster still at epoch 0 (started
    from --peers alone), where an empty volume is taken for a new cluster: this one had data."""
    with ProcessCluster(tmp_path, size=3) as cluster:
        cluster.start()
        assert cluster.status(0).epoch == 0
        cluster.kill(1)
        acked = await put_many(cluster[0].address, 500)  # on kv-0 and kv-2 only
        assert len(acked) == 500
        cluster.kill(2)
        truncate(data_file(cluster[2].data_dir))
        cluster.start([1, 2], wait=False)
        for n in (1, 2):
            cluster.wait_serving(n, timeout=60)
        wait_for(lambda: "rebuild finished" in cluster[2].log_tail(300), 30, "kv-2's rebuild")
        cluster.kill(0)
        async with grpc.aio.insecure_channel(cluster[2].address) as channel:
            request = kv_pb2.BatchGetRequest(keys=acked, consistency=ONE)  # answered by kv-2's store
            reply = await kv_pb2_grpc.KVStub(channel).BatchGet(request, timeout=20)
        assert {r.key: r.value for r in reply.kvs if r.found} == {k: b"value-" + k for k in acked}

"""kvnode as a real process: durability across SIGKILL, graceful SIGTERM, and start-up refusals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc
from kvnode.testing.processes import ProcessCluster, free_port, wait_for


def run_kvnode(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvnode", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


async def put_many(address: str, count: int, prefix: str = "k") -> list[bytes]:
    """Put ``count`` keys concurrently; returns the keys whose put was acknowledged."""
    async with grpc.aio.insecure_channel(address) as channel:
        kv = kv_pb2_grpc.KVStub(channel)

        async def one(i: int) -> bytes | None:
            key = f"{prefix}{i}".encode()
            try:
                await kv.Put(kv_pb2.PutRequest(key=key, value=b"value-" + key), timeout=20)
            except grpc.aio.AioRpcError:
                return None
            return key

        results = await asyncio.gather(*(one(i) for i in range(count)))
    return [k for k in results if k is not None]


async def read_all(address: str, keys: list[bytes]) -> dict[bytes, bytes]:
    async with grpc.aio.insecure_channel(address) as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        found = {}
        for start in range(0, len(keys), 500):
            reply = await kv.BatchGet(kv_pb2.BatchGetRequest(keys=keys[start : start + 500]), timeout=20)
            found.update({r.key: r.value for r in reply.kvs if r.found})
        return found


@pytest.fixture
def single(tmp_path: Path) -> Iterator[ProcessCluster]:
    with ProcessCluster(tmp_path, size=1) as cluster:
        yield cluster


async def test_acknowledged_writes_survive_sigkill(single: ProcessCluster) -> None:
    single.start()
    acked = await put_many(single[0].address, 1000)
    assert len(acked) == 1000
    single.kill(0)
    assert not single[0].running
    single.start(0)
    found = await read_all(single[0].address, acked)
    assert found == {k: b"value-" + k for k in acked}


def writer_pid(node_pid: int) -> int:
    """The node's storage writer process (its only child)."""
    children = Path(f"/proc/{node_pid}/task/{node_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def test_the_storage_writer_never_outlives_a_killed_node(single: ProcessCluster) -> None:
    single.start()
    writer = writer_pid(single[0].pid)
    single.kill(0)
    wait_for(lambda: not alive(writer), 10, "the writer process to exit after its node was killed")


async def test_a_node_whose_storage_writer_dies_exits_and_keeps_its_data(single: ProcessCluster) -> None:
    single.start()
    acked = await put_many(single[0].address, 200)
    os.kill(writer_pid(single[0].pid), signal.SIGKILL)
    process = single[0].process
    assert process is not None
    assert process.wait(timeout=30) == 1  # non-zero, so that a supervisor restarts it
    assert "storage writer process exited" in single[0].log_tail()
    single.start(0)
    assert await read_all(single[0].address, acked) == {k: b"value-" + k for k in acked}


async def test_sigterm_finishes_in_flight_requests_and_closes_cleanly(single: ProcessCluster) -> None:
    single.start()
    writes = asyncio.create_task(put_many(single[0].address, 400, prefix="inflight"))
    await asyncio.sleep(0.05)  # let requests get in flight; the assertions below do not depend on timing
    single._signal(0, signal.SIGTERM)
    acked = await writes
    assert single[0].process is not None
    assert await asyncio.to_thread(single[0].process.wait, 30) == 0
    assert "stopped" in single[0].log_tail()
    single.start(0)
    found = await read_all(single[0].address, acked)
    assert set(found) == set(acked)


async def test_clock_stays_monotonic_across_restarts_even_if_the_wall_clock_jumps_back(
    tmp_path: Path,
) -> None:
    cluster = ProcessCluster(tmp_path, size=1)
    try:
        cluster.start()
        async with grpc.aio.insecure_channel(cluster[0].address) as channel:
            before = (
                await kv_pb2_grpc.KVStub(channel).Put(kv_pb2.PutRequest(key=b"k", value=b"1"))
            ).version.hlc
        cluster.kill(0)
        cluster[0].extra_args = ["--clock-offset-ms", str(-3_600_000)]
        cluster.start(0)
        async with grpc.aio.insecure_channel(cluster[0].address) as channel:
            after = (
                await kv_pb2_grpc.KVStub(channel).Put(kv_pb2.PutRequest(key=b"k", value=b"2"))
            ).version.hlc
            assert after > before
            assert (await kv_pb2_grpc.KVStub(channel).Get(kv_pb2.GetRequest(key=b"k"))).kv.value == b"2"
    finally:
        cluster.close()


def test_a_data_dir_held_by_another_node_is_refused(single: ProcessCluster) -> None:
    single.start()
    result = run_kvnode(
        "--node-id", "kv-0", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(single[0].data_dir)
    )
    assert result.returncode == 1
    assert "is in use by another kvnode process" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_data_dir_of_another_node_is_refused(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, size=1)
    try:
        cluster.start()
        cluster.terminate(0)
    finally:
        cluster.close()
    result = run_kvnode(
        "--node-id",
        "someone-else",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--data-dir",
        str(cluster[0].data_dir),
    )
    assert result.returncode == 1
    assert "belongs to node 'kv-0', not 'someone-else'" in result.stderr


def test_a_corrupt_data_file_is_refused_without_a_traceback(tmp_path: Path) -> None:
    lmdb_dir = tmp_path / "d" / "lmdb"
    lmdb_dir.mkdir(parents=True)
    (lmdb_dir / "data.mdb").write_bytes(b"this is not an LMDB file" * 1000)
    result = run_kvnode(
        "--node-id", "n", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d")
    )
    assert result.returncode == 1
    assert "data.mdb: meta page 0 is not a meta page" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--listen", "nonsense"], 2, "invalid address 'nonsense': expected HOST:PORT"),
        (["--listen", "192.0.2.1:7000"], 1, "cannot listen on 192.0.2.1:7000"),
        (["--frobnicate"], 2, "unrecognized arguments: --frobnicate"),
        (["--peers", "kv-0"], 2, "invalid peer 'kv-0': expected ID=HOST:PORT"),
        (["--peers", "other=127.0.0.1:1"], 1, "--peers must include this node"),
        (["--tombstone-grace", "1h"], 1, "--tombstone-grace (3600s) must exceed --hint-max-age"),
        (["--map-size", "huge"], 2, "invalid size 'huge'"),
    ],
)
def test_bad_flags_get_clear_errors(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    base = ["--node-id", "kv-0", "--data-dir", str(tmp_path / "d")]
    if "--listen" not in args:
        base += ["--listen", f"127.0.0.1:{free_port()}"]
    result = run_kvnode(*base, *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_refused(single: ProcessCluster) -> None:
    single.start()
    result = run_kvnode(
        "--node-id", "other", "--listen", single[0].address, "--data-dir", str(single.root / "other")
    )
    assert result.returncode == 1
    assert f"cannot listen on {single[0].address}" in result.stderr


def test_environment_variables_set_flags(tmp_path: Path) -> None:
    result = run_kvnode(env={"KVNODE_LISTEN": "bad-address"})
    assert result.returncode == 2
    assert "KVNODE_LISTEN: invalid address 'bad-address'" in result.stderr
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kvnode"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "KVNODE_NODE_ID": "env-node",
            "KVNODE_LISTEN": f"127.0.0.1:{port}",
            "KVNODE_DATA_DIR": str(tmp_path / "env"),
        },
    )
    try:
        from kvnode.testing.processes import is_serving

        wait_for(lambda: is_serving(f"127.0.0.1:{port}"), 30, "the node configured by environment")
        assert (tmp_path / "env" / "lmdb" / "data.mdb").exists()
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert b"node env-node serving" in out


async def test_a_full_map_refuses_writes_and_keeps_earlier_data(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, size=1, extra_args=["--map-size", "1MiB", "--max-map-size", "2MiB"])
    try:
        cluster.start()
        address = cluster[0].address
        kept = await put_many(address, 50, prefix="early")
        assert len(kept) == 50
        async with grpc.aio.insecure_channel(address) as channel:
            kv = kv_pb2_grpc.KVStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                for i in range(100):
                    mutations = [
                        kv_pb2.Mutation(key=b"big%d-%d" % (i, j), value=b"x" * 50_000) for j in range(10)
                    ]
                    await kv.BatchWrite(kv_pb2.BatchWriteRequest(mutations=mutations))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-map-size" in (info.value.details() or "")
        assert set(await read_all(address, kept)) == set(kept)
        assert cluster[0].running
    finally:
        cluster.close()

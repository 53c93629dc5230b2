"""Keys at, under and over the limit, and bad writes beside good ones."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

import grpc
import pytest

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc
from kvnode.client import AsyncKVClient, Entry, InvalidArgument, Level
from kvnode.config import Limits
from kvnode.storage.schema import MAX_KEY_BYTES
from kvnode.testing.processes import ProcessCluster
from tests.hostile.conftest import call_status, good_traffic

LIMIT = Limits().max_key_bytes


def key(length: int, tag: str = "k") -> bytes:
    return (tag.encode() + b"/" + b"x" * length)[:length]


@pytest.mark.parametrize("length", [1, 2, 255, LIMIT - 1, LIMIT])
async def test_a_key_up_to_the_limit_works_on_every_path(trio: ProcessCluster, length: int) -> None:
    """Put, Get, Delete, Scan, BatchWrite and BatchGet, replicated to every replica (read at ALL)."""
    async with AsyncKVClient(trio.endpoints) as kv:
        k = key(length, f"p{length}")
        await kv.put(k, b"v1", consistency=Level.ALL)
        assert (await kv.get(k, consistency=Level.ALL)).value == b"v1"  # type: ignore[union-attr]
        assert [e.key for e in await _scan(kv, k)] == [k]
        await kv.batch_write([(k, b"v2")], consistency=Level.ALL)
        assert [e.value for e in await kv.batch_get([k, k], consistency=Level.ALL) if e] == [b"v2", b"v2"]
        await kv.delete(k, consistency=Level.ALL)
        assert await kv.get(k, consistency=Level.ALL) is None


async def _scan(kv: AsyncKVClient, k: bytes) -> list[Entry]:
    return [e async for e in kv.scan(prefix=k, consistency=Level.ALL)]


@pytest.mark.parametrize("length", [LIMIT + 1, MAX_KEY_BYTES, MAX_KEY_BYTES + 1, 509, 511, 600, 4096])
async def test_a_key_over_the_limit_is_refused_naming_the_limit(single: ProcessCluster, length: int) -> None:
    k = key(length)
    async with grpc.aio.insecure_channel(single[0].address) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        calls: dict[str, Awaitable[object]] = {
            "Put": stub.Put(kv_pb2.PutRequest(key=k, value=b"v")),
            "Get": stub.Get(kv_pb2.GetRequest(key=k)),
            "Delete": stub.Delete(kv_pb2.DeleteRequest(key=k)),
            "BatchWrite": stub.BatchWrite(kv_pb2.BatchWriteRequest(mutations=[kv_pb2.Mutation(key=k)])),
            "BatchGet": stub.BatchGet(kv_pb2.BatchGetRequest(keys=[k])),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert f"over the limit of {LIMIT} bytes (--max-key-bytes)" in (refused.value.details() or ""), (
                name
            )


@pytest.mark.parametrize("cluster", ["single", "trio"])
async def test_bad_writes_beside_good_ones_fail_alone(cluster: str, request: pytest.FixtureRequest) -> None:
    """300 good puts at the same time as 300 puts with 600-byte keys: each bad one is refused with
    INVALID_ARGUMENT and every good one succeeds."""
    nodes: ProcessCluster = request.getfixturevalue(cluster)
    async with good_traffic(nodes, f"alone-{cluster}/"), AsyncKVClient(nodes.endpoints) as kv:
        good = [kv.put(f"alone-{cluster}/good/{i}", b"v") for i in range(300)]
        bad = [kv.put(key(600, f"bad{i}"), b"v") for i in range(300)]
        results = await asyncio.gather(*good, *bad, return_exceptions=True)
        assert [r for r in results[:300] if isinstance(r, BaseException)] == []
        assert all(isinstance(r, InvalidArgument) for r in results[300:]), {type(r) for r in results[300:]}


def test_a_limit_the_storage_cannot_hold_is_refused_at_start(tmp_path: Path) -> None:
    """--max-key-bytes above what every index can hold: the node does not start, and says the
    largest value it allows."""
    cluster = ProcessCluster(tmp_path, 1, extra_args=["--max-key-bytes", str(MAX_KEY_BYTES + 1)])
    with cluster:
        process_status = _start_and_wait(cluster)
    assert process_status == 1
    log = cluster[0].log_tail()
    assert f"the largest allowed value is {MAX_KEY_BYTES}" in log and "Traceback" not in log


def _start_and_wait(cluster: ProcessCluster) -> int:
    cluster.start(wait=False)
    process = cluster[0].process
    assert process is not None
    return process.wait(timeout=60)


async def test_a_write_status_is_always_one_of_the_documented_codes(single: ProcessCluster) -> None:
    """Keys of every length from the limit to twice it: each Put is OK or INVALID_ARGUMENT, never
    INTERNAL or UNKNOWN (LMDB's own limit of 511 bytes used to show through as INTERNAL)."""
    async with grpc.aio.insecure_channel(single[0].address) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        codes = {
            await call_status(stub.Put(kv_pb2.PutRequest(key=key(n, "codes"), value=b"v")))
            for n in range(LIMIT - 5, 2 * LIMIT)
        }
    assert codes == {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}

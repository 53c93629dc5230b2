"""Requests whose answer would not fit in memory are refused before the node loads it."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc
from kvnode.client import AsyncKVClient
from kvnode.testing.processes import ProcessCluster
from tests.hostile.conftest import good_traffic

MIB = 1 << 20


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("cluster", ["single", "trio"])
async def test_one_large_value_asked_for_a_thousand_times(
    cluster: str, request: pytest.FixtureRequest
) -> None:
    """Before: a 14 KB BatchGet naming one 1 MiB value 1000 times was refused after 6.5 s, and the
    node's memory went from 244 MB to 2.1 GB and stayed there."""
    nodes: ProcessCluster = request.getfixturevalue(cluster)
    async with AsyncKVClient(nodes.endpoints) as kv:
        await kv.put("big", b"x" * MIB)
    before = max(rss(n.pid) for n in nodes.nodes)
    async with good_traffic(nodes, "memory/"), grpc.aio.insecure_channel(nodes[0].address) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.BatchGet(kv_pb2.BatchGetRequest(keys=[b"big"] * 1000))
        took = time.monotonic() - started
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "--max-batch-bytes" in (refused.value.details() or "")
    assert took < 2.0, took
    after = max(rss(n.pid) for n in nodes.nodes)
    assert after - before < 64 * MIB, (before, after)

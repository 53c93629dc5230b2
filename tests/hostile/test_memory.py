"""Requests whose bytes would not fit in memory are refused, or wait their turn, before the node
loads them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import grpc
import pytest

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc
from kvnode.client import AsyncKVClient, Level
from kvnode.cluster.clock import HybridClock
from kvnode.cluster.links import PeerLink
from kvnode.core.records import Record
from kvnode.metrics import NodeMetrics
from kvnode.testing.memory import PeakMemory
from kvnode.testing.processes import ProcessCluster
from tests.hostile.conftest import good_traffic, metric, running

MIB = 1 << 20
CAP = 24 * MIB
"""The small node's --max-request-memory: two requests' room (the gRPC message cap is 11 MiB)."""
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


@pytest.mark.parametrize("cluster", ["single", "trio"])
async def test_one_large_value_asked_for_a_thousand_times(
    cluster: str, request: pytest.FixtureRequest
) -> None:
    """Before: a 14 KB BatchGet naming one 1 MiB value 1000 times was refused after 6.5 s, and the
    node's memory went from 244 MB to 2.1 GB and stayed there."""
    nodes: ProcessCluster = request.getfixturevalue(cluster)
    async with AsyncKVClient(nodes.endpoints) as kv:
        await kv.put("big", b"x" * MIB)
    with PeakMemory([n.pid for n in nodes.nodes]) as memory:
        memory.reset()
        before = memory.now()
        async with good_traffic(nodes, "memory/"), grpc.aio.insecure_channel(nodes[0].address) as channel:
            stub = kv_pb2_grpc.KVStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.BatchGet(kv_pb2.BatchGetRequest(keys=[b"big"] * 1000))
        peak = memory.read()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "--max-batch-bytes" in (refused.value.details() or "")
    assert peak.anon - before < 64 * MIB, (before, peak)


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    """One node whose requests in progress may hold at most :data:`CAP`."""
    folder = tmp_path_factory.mktemp("capped")
    with running(
        folder, 1, replication_factor=1, metrics=True, extra_args=["--max-request-memory", "24MiB"]
    ) as node:
        yield node


def _batch(n: int, value: bytes) -> kv_pb2.BatchWriteRequest:
    return kv_pb2.BatchWriteRequest(
        mutations=[kv_pb2.Mutation(key=b"flood/%d/%d" % (n, i), value=value) for i in range(4)]
    )


async def test_a_flood_of_large_writes_waits_its_turn_within_the_memory_cap(capped: ProcessCluster) -> None:
    """Before: 256 BatchWrites of 4 MiB sent at once took a node to 2.4 GiB of anonymous memory (a
    request is copied four or five times on its way in), past the chart's 1 GiB limit. Now a
    request's bytes are taken in only once there is room for it under --max-request-memory: the
    rest wait in the client's send buffers (HTTP/2 flow control), and those that wait more than a
    second are refused as overloaded, having done nothing. The flood here is 64 x 4 MiB against a
    cap of 24 MiB."""
    value = os.urandom(MIB - 64)
    with PeakMemory([n.pid for n in capped.nodes]) as memory:
        memory.reset()
        before = memory.now()
        async with (
            good_traffic(capped, "beside-the-flood/"),
            grpc.aio.insecure_channel(capped[0].address, options=CHANNEL_OPTIONS) as channel,
        ):
            stub = kv_pb2_grpc.KVStub(channel)
            calls = [stub.BatchWrite(_batch(n, value)) for n in range(64)]
            outcomes = await asyncio.gather(*(_outcome(call) for call in calls))
        peak = memory.read()
    assert peak.anon - before < 256 * MIB, f"the node held the flood: {before} -> {peak}"
    assert {status for status, _ in outcomes} <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    refused = [details for status, details in outcomes if status != grpc.StatusCode.OK]
    assert all("--max-request-memory" in d for d in refused), refused[:3]
    assert len(refused) < len(outcomes), "some of the flood was admitted"
    written = [n for n, (status, _) in enumerate(outcomes) if status == grpc.StatusCode.OK]
    refused_ids = [n for n, (status, _) in enumerate(outcomes) if status != grpc.StatusCode.OK]
    async with AsyncKVClient(capped.endpoints) as kv:
        stored = {n: await kv.get(b"flood/%d/0" % n) for n in range(len(outcomes))}
    assert all(stored[n] is not None and stored[n].value == value for n in written)  # type: ignore[union-attr]
    assert all(stored[n] is None for n in refused_ids), "a refused request wrote nothing"
    assert metric(capped, 0, "kvnode_request_bytes_in_progress") == 0
    assert metric(capped, 0, "kvnode_requests_in_progress") == 0


async def test_the_client_sends_an_overloaded_flood_again_until_all_of_it_is_in(
    capped: ProcessCluster,
) -> None:
    """The same flood through the Python client: what the node refused as overloaded (nothing done)
    is sent again after a pause, so every write succeeds."""
    value = os.urandom(MIB - 64)
    async with AsyncKVClient(capped.endpoints, timeout=120) as kv:
        puts = [{b"again/%d/%d" % (n, i): value for i in range(4)} for n in range(64)]
        await asyncio.gather(*(kv.batch_write(p) for p in puts))
        got = [await kv.get(b"again/%d/3" % n) for n in range(64)]
    assert all(e is not None and e.value == value for e in got)


async def _outcome(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def test_a_peer_read_of_callers_keys_that_passes_a_message_is_split_not_refused(
    trio: ProcessCluster,
) -> None:
    """A node sends a peer the keys of concurrent client reads in one Replica.Read. With large
    values the answer may pass the gRPC message cap (11 MiB), which the peer refuses to load,
    although each read alone fits: the batch is split and sent again, and every read is answered.
    (Before, all the reads in it failed: 1 of 3 replicas answered.)"""
    values = {b"large/%d" % n: os.urandom(MIB - 64) for n in range(16)}
    async with AsyncKVClient(trio.endpoints) as kv:
        for key, value in values.items():
            await kv.put(key, value, consistency=Level.ALL)
    link = PeerLink(
        "kv-1",
        trio[1].address,
        node_id="kv-0",
        clock=HybridClock(),
        epoch=lambda: 0,
        adopt=_ignore,
        timeout=30.0,
        metrics=NodeMetrics("kv-0", "test"),
    )
    try:
        answers = await link.read(list(values))  # as the batcher would merge 16 callers' keys
    finally:
        await link.close()
    assert [a.value if isinstance(a, Record) else a for a in answers] == list(values.values())
    assert metric(trio, 1, "kvnode_requests_total", method="Replica/Read", code="INVALID_ARGUMENT") >= 1


async def _ignore(membership: object) -> None:
    """A membership the peer sends back: this test's link keeps none."""

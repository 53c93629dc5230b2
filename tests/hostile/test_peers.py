"""A hostile (or broken) peer on the Replica service: clocks and versions from the future, records
no replica may store. Each is refused on its own, and the node goes on serving correctly."""

from __future__ import annotations

import time

import grpc
import pytest

from kvnode.api.v1 import replica_pb2, types_pb2
from kvnode.client import AsyncKVClient, Level
from kvnode.cluster.clock import from_ms, physical_ms
from kvnode.testing.processes import ProcessCluster
from tests.hostile.conftest import good_traffic, header, metric, replica_stub

NEAR_MAX_CLOCK = 2**64 - 2


def _now_hlc() -> int:
    return from_ms(time.time_ns() // 1_000_000)


def record(key: bytes, value: bytes, hlc: int, writer: str = "intruder") -> types_pb2.Record:
    return types_pb2.Record(key=key, value=value, version=types_pb2.Version(hlc=hlc, node_id=writer))


async def test_a_clock_near_2_64_is_refused_and_never_kept(trio: ProcessCluster) -> None:
    """Before: every node saved the clock, and every Put and Get failed, also after a restart."""
    async with good_traffic(trio, "clock/"):
        before = metric(trio, 0, "kvnode_clock_refusals_total")
        async with replica_stub(trio[0].address) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Read(replica_pb2.ReadRequest(header=header(NEAR_MAX_CLOCK), keys=[b"k"]))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "ahead of this node's clock" in (refused.value.details() or "")
        assert metric(trio, 0, "kvnode_clock_refusals_total") == before + 1
    async with AsyncKVClient(trio.endpoints) as kv:
        written = await kv.put("clock/after", b"v")
    assert physical_ms(written.version.hlc) - physical_ms(_now_hlc()) < 60_000


async def test_a_record_from_the_future_is_refused_and_later_writes_win(trio: ProcessCluster) -> None:
    """Before: later Puts and Deletes returned OK, but Get kept returning the injected value."""
    injected = record(b"future/k", b"injected", from_ms(physical_ms(_now_hlc()) + 3_600_000))
    async with good_traffic(trio, "future/good/"):
        async with replica_stub(trio[1].address) as stub:
            reply = await stub.Apply(
                replica_pb2.ApplyRequest(
                    header=header(_now_hlc()), items=[replica_pb2.ApplyItem(record=injected)]
                )
            )
        (outcome,) = reply.outcomes
        assert not outcome.applied and outcome.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "ahead of this node's clock" in outcome.error
        async with AsyncKVClient(trio.endpoints) as kv:
            await kv.put(b"future/k", b"mine", consistency=Level.ALL)
            entry = await kv.get(b"future/k", consistency=Level.ALL)
            assert entry is not None and entry.value == b"mine"
            await kv.delete(b"future/k", consistency=Level.ALL)
            assert await kv.get(b"future/k", consistency=Level.ALL) is None


async def test_each_record_of_an_apply_is_checked_on_its_own(trio: ProcessCluster) -> None:
    """Records no replica may store (an empty key, a key no index can hold, a value over the
    limit, a malformed writer id) are refused one by one; the good record beside them is stored."""
    now = _now_hlc()
    items = [
        record(b"", b"v", now),
        record(b"x" * 600, b"v", now),
        record(b"peer/huge", b"x" * (2 << 20), now),
        record(b"peer/writer", b"v", now, writer="w" * 300),
        record(b"peer/good", b"good", now, writer="kv-1"),
    ]
    async with good_traffic(trio, "peer/traffic/"):
        async with replica_stub(trio[2].address) as stub:
            reply = await stub.Apply(
                replica_pb2.ApplyRequest(
                    header=header(now), items=[replica_pb2.ApplyItem(record=r) for r in items]
                )
            )
        codes = [o.error_code for o in reply.outcomes]
        invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert codes == [invalid, invalid, invalid, invalid, 0], [o.error for o in reply.outcomes]
        assert reply.outcomes[-1].applied
        async with replica_stub(trio[2].address) as stub:
            read = await stub.Read(
                replica_pb2.ReadRequest(header=header(now), keys=[b"peer/good", b"peer/writer"])
            )
        assert read.results[0].found and read.results[0].record.value == b"good"
        assert not read.results[1].found


async def test_a_read_larger_than_a_message_is_refused_before_it_is_loaded(trio: ProcessCluster) -> None:
    """A peer naming one 1 MiB value 1000 times (a 14 KB request) would make the replica build a
    1 GB answer: the replica refuses it from the records' sizes alone."""
    async with AsyncKVClient(trio.endpoints) as kv:
        await kv.put("peer/big", b"x" * (1 << 20), consistency=Level.ALL)
    async with good_traffic(trio, "peer/big-traffic/"), replica_stub(trio[0].address) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Read(replica_pb2.ReadRequest(header=header(_now_hlc()), keys=[b"peer/big"] * 1000))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "this read may carry" in (refused.value.details() or "")


@pytest.mark.parametrize(
    "request_",
    [
        replica_pb2.DigestsRequest(partitions=[1 << 20]),
        replica_pb2.KeyVersionsRequest(partition=1 << 20),
        replica_pb2.FetchPartitionRequest(partition=0, limit=1 << 30),
        replica_pb2.ReadRequest(keys=[]),
        replica_pb2.ReadRequest(keys=[b"x" * 600]),
        replica_pb2.ReplicaScanRequest(start_key=b"x" * 4096),
    ],
    ids=["digests-partition", "key-versions-partition", "page-limit", "no-keys", "long-key", "scan-bound"],
)
async def test_out_of_range_requests_are_invalid_argument(trio: ProcessCluster, request_: object) -> None:
    method = type(request_).__name__.removesuffix("Request").removeprefix("Replica")
    request_.header.CopyFrom(header(_now_hlc()))  # type: ignore[attr-defined]
    async with replica_stub(trio[0].address) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await getattr(stub, method)(request_)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()

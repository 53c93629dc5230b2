"""The public KV API of one node, over real gRPC."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc, types_pb2
from kvnode.config import Limits
from kvnode.node import Node

if TYPE_CHECKING:
    KV = kv_pb2_grpc.KVAsyncStub
NodeFactory = Callable[..., Awaitable[Node]]


async def expect_status(call: object, code: grpc.StatusCode, match: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    details = info.value.details() or ""
    assert match in details, details
    return details


async def test_put_get_delete_and_previous_values(kv: KV) -> None:
    first = await kv.Put(kv_pb2.PutRequest(key=b"k", value=b"v1"))
    got = (await kv.Get(kv_pb2.GetRequest(key=b"k"))).kv
    assert (got.found, got.value, got.version) == (True, b"v1", first.version)
    second = await kv.Put(kv_pb2.PutRequest(key=b"k", value=b"v2", return_previous=True))
    assert second.previous.found and second.previous.value == b"v1"
    assert (second.version.hlc, second.version.node_id) > (first.version.hlc, first.version.node_id)
    deleted = await kv.Delete(kv_pb2.DeleteRequest(key=b"k", return_previous=True))
    assert deleted.previous.value == b"v2"
    assert not (await kv.Get(kv_pb2.GetRequest(key=b"k"))).kv.found


async def test_a_missing_key_is_found_false_everywhere(kv: KV) -> None:
    assert (await kv.Get(kv_pb2.GetRequest(key=b"nope"))).kv == types_pb2.KeyValue(key=b"nope", found=False)
    put = await kv.Put(kv_pb2.PutRequest(key=b"nope", value=b"x", return_previous=True))
    assert put.previous == types_pb2.KeyValue(key=b"nope", found=False)
    batch = await kv.BatchGet(kv_pb2.BatchGetRequest(keys=[b"nope", b"never"]))
    assert [(r.key, r.found) for r in batch.kvs] == [(b"nope", True), (b"never", False)]
    gone = await kv.Delete(kv_pb2.DeleteRequest(key=b"never", return_previous=True))
    assert gone.previous == types_pb2.KeyValue(key=b"never", found=False)


async def test_scan_pages_through_a_prefix_in_key_order(kv: KV) -> None:
    keys = [f"user/{i:04}".encode() for i in range(250)]
    await kv.BatchWrite(
        kv_pb2.BatchWriteRequest(mutations=[kv_pb2.Mutation(key=k, value=k[::-1]) for k in keys])
    )
    await kv.Put(kv_pb2.PutRequest(key=b"zzz", value=b"outside"))
    await kv.Delete(kv_pb2.DeleteRequest(key=b"user/0100"))
    seen: list[bytes] = []
    token = b""
    pages = 0
    while True:
        page = await kv.Scan(kv_pb2.ScanRequest(prefix=b"user/", limit=100, continuation_token=token))
        pages += 1
        assert all(item.value == item.key[::-1] for item in page.kvs)
        seen += [item.key for item in page.kvs]
        token = page.continuation_token
        if not token:
            break
    assert seen == [k for k in keys if k != b"user/0100"]
    assert pages >= 3


async def test_scan_range_and_keys_only(kv: KV) -> None:
    await kv.BatchWrite(
        kv_pb2.BatchWriteRequest(mutations=[kv_pb2.Mutation(key=b"%c" % c, value=b"v") for c in b"abcdef"])
    )
    page = await kv.Scan(kv_pb2.ScanRequest(start_key=b"b", end_key=b"e", keys_only=True))
    assert [(i.key, i.value) for i in page.kvs] == [(b"b", b""), (b"c", b""), (b"d", b"")]
    assert page.continuation_token == b""


async def test_batch_write_and_get_keep_request_order(kv: KV) -> None:
    written = await kv.BatchWrite(
        kv_pb2.BatchWriteRequest(
            mutations=[
                kv_pb2.Mutation(key=b"a", value=b"1"),
                kv_pb2.Mutation(key=b"b", value=b"2"),
                kv_pb2.Mutation(key=b"a", delete=True),
            ]
        )
    )
    assert len(written.versions) == 3
    got = await kv.BatchGet(kv_pb2.BatchGetRequest(keys=[b"b", b"a"]))
    assert [(r.key, r.found, r.value) for r in got.kvs] == [(b"b", True, b"2"), (b"a", False, b"")]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (kv_pb2.PutRequest(key=b"", value=b"v"), "key must not be empty"),
        (kv_pb2.PutRequest(key=b"k" * 501, value=b"v"), "over the limit of 500 bytes (--max-key-bytes)"),
        (
            kv_pb2.PutRequest(key=b"k", value=b"v" * (1024 * 1024 + 1)),
            "over the limit of 1048576 bytes (--max-value-bytes)",
        ),
    ],
)
async def test_oversized_or_empty_keys_and_values_are_invalid(
    kv: KV, request_: kv_pb2.PutRequest, message: str
) -> None:
    await expect_status(kv.Put(request_), grpc.StatusCode.INVALID_ARGUMENT, message)
    assert (await kv.Scan(kv_pb2.ScanRequest())).kvs == []  # nothing was stored


async def test_batch_limits(kv: KV) -> None:
    too_many = kv_pb2.BatchWriteRequest(
        mutations=[kv_pb2.Mutation(key=b"k%d" % i, value=b"v") for i in range(1001)]
    )
    await expect_status(
        kv.BatchWrite(too_many), grpc.StatusCode.INVALID_ARGUMENT, "limit of 1000 items (--max-batch-items)"
    )
    too_big = kv_pb2.BatchWriteRequest(
        mutations=[kv_pb2.Mutation(key=b"k%d" % i, value=b"v" * 900_000) for i in range(5)]
    )
    await expect_status(
        kv.BatchWrite(too_big), grpc.StatusCode.INVALID_ARGUMENT, "limit of 4194304 bytes (--max-batch-bytes)"
    )
    await expect_status(
        kv.BatchWrite(kv_pb2.BatchWriteRequest()), grpc.StatusCode.INVALID_ARGUMENT, "batch is empty"
    )
    await expect_status(
        kv.BatchGet(kv_pb2.BatchGetRequest(keys=[b"ok", b""])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "key #1 must not be empty",
    )
    # One bad mutation refuses the whole batch, and is named.
    ok = [kv_pb2.Mutation(key=b"ok-%d" % i, value=b"v") for i in range(3)]
    empty_key = kv_pb2.BatchWriteRequest(mutations=[*ok, kv_pb2.Mutation(key=b"", value=b"v")])
    await expect_status(
        kv.BatchWrite(empty_key), grpc.StatusCode.INVALID_ARGUMENT, "mutation #3 key must not be empty"
    )
    long_key = kv_pb2.BatchWriteRequest(mutations=[kv_pb2.Mutation(key=b"k" * 501, value=b"v"), *ok])
    await expect_status(
        kv.BatchWrite(long_key),
        grpc.StatusCode.INVALID_ARGUMENT,
        "mutation #0 key is 501 bytes, over the limit of 500 bytes (--max-key-bytes)",
    )
    big_value = kv_pb2.BatchWriteRequest(mutations=[*ok, kv_pb2.Mutation(key=b"big", value=b"v" * 1_048_577)])
    await expect_status(
        kv.BatchWrite(big_value),
        grpc.StatusCode.INVALID_ARGUMENT,
        "mutation #3 value is 1048577 bytes, over the limit of 1048576 bytes (--max-value-bytes)",
    )
    assert (await kv.Scan(kv_pb2.ScanRequest())).kvs == []


async def test_configured_limits_apply(make_node: NodeFactory) -> None:
    node = await make_node("small", limits=Limits(max_key_bytes=8, max_value_bytes=16, max_batch_items=2))
    async with grpc.aio.insecure_channel(node.config.listen) as channel:
        kv: KV = kv_pb2_grpc.KVStub(channel)
        await expect_status(
            kv.Put(kv_pb2.PutRequest(key=b"123456789", value=b"")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "limit of 8 bytes",
        )
        await expect_status(
            kv.Put(kv_pb2.PutRequest(key=b"k", value=b"x" * 17)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "limit of 16 bytes",
        )
        await expect_status(
            kv.Scan(kv_pb2.ScanRequest(limit=3)), grpc.StatusCode.INVALID_ARGUMENT, "limit of 2 items"
        )


async def test_malformed_requests_are_refused_clearly(kv: KV) -> None:
    await expect_status(
        kv.Scan(kv_pb2.ScanRequest(continuation_token=b"garbage")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "malformed continuation_token",
    )
    await expect_status(
        kv.Scan(kv_pb2.ScanRequest(consistency=types_pb2.CONSISTENCY_LINEARIZABLE)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "single-key",
    )
    await expect_status(
        kv.Get(kv_pb2.GetRequest(key=b"k", consistency=99)),  # type: ignore[arg-type]
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown consistency level 99",
    )
    await expect_status(
        kv.Scan(kv_pb2.ScanRequest(start_key=b"b", end_key=b"a")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "end_key must be greater",
    )


async def test_every_consistency_level_works_on_a_single_node(kv: KV) -> None:
    for level in (
        types_pb2.CONSISTENCY_ONE,
        types_pb2.CONSISTENCY_QUORUM,
        types_pb2.CONSISTENCY_ALL,
        types_pb2.CONSISTENCY_LINEARIZABLE,
    ):
        await kv.Put(kv_pb2.PutRequest(key=b"k", value=b"%d" % level, consistency=level))
        assert (await kv.Get(kv_pb2.GetRequest(key=b"k", consistency=level))).kv.value == b"%d" % level


async def test_health_and_reflection_are_served(node: Node) -> None:
    async with grpc.aio.insecure_channel(node.config.listen) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "kvnode.api.v1.KV", "kvnode.api.v1.Admin"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = [
            r
            async for r in stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        ]
        names = {s.name for s in replies[0].list_services_response.service}
        assert {
            "kvnode.api.v1.KV",
            "kvnode.api.v1.Replica",
            "kvnode.api.v1.Admin",
            "grpc.health.v1.Health",
        } <= names


async def test_pages_and_batches_of_large_values_stay_inside_one_message(kv: KV) -> None:
    big = b"v" * (900 * 1024)
    for i in range(10):
        await kv.Put(kv_pb2.PutRequest(key=b"big%02d" % i, value=big))
    seen: list[bytes] = []
    token = b""
    while True:
        page = await kv.Scan(kv_pb2.ScanRequest(prefix=b"big", continuation_token=token))
        assert sum(len(item.value) for item in page.kvs) <= 4 * 1024 * 1024 + len(big)
        seen += [item.key for item in page.kvs]
        token = page.continuation_token
        if not token:
            break
    assert seen == [b"big%02d" % i for i in range(10)]
    await expect_status(
        kv.BatchGet(kv_pb2.BatchGetRequest(keys=[b"big%02d" % i for i in range(10)])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "the limit of 4194304 bytes (--max-batch-bytes); ask for fewer keys",
    )

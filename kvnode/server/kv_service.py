"""The public KV service: validates requests, then hands them to the coordinator."""

from __future__ import annotations

from typing import Any

import grpc

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc, types_pb2
from kvnode.cluster.coordinator import Coordinator, WriteResult
from kvnode.cluster.scan import Scanner
from kvnode.config import Limits
from kvnode.core.errors import InvalidArgument
from kvnode.core.levels import Level, resolve, single_key_only
from kvnode.core.records import Record, missing
from kvnode.server.rpc import handler
from kvnode.server.validation import check_batch, check_key, check_keys, check_value, check_values
from kvnode.storage.engine import OverBudget

Ctx = grpc.aio.ServicerContext[Any, Any]

DEFAULT_SCAN_LIMIT = 1000


def _previous(key: bytes, result: WriteResult, wanted: bool) -> types_pb2.KeyValue | None:
    """The replaced value, when the request asked for it (None leaves the field unset)."""
    if not wanted:
        return None
    prev = result.previous
    return missing(key) if prev is None else prev.to_key_value()


def _found(key: bytes, record: Record | None) -> kv_pb2.GetResponse:
    return kv_pb2.GetResponse(kv=missing(key) if record is None else record.to_key_value())


RECORD_OVERHEAD = 300  # a stored record's bytes beyond its value: header, checksum, writer id


def _over_budget(budget: int, size: str) -> InvalidArgument:
    return InvalidArgument(
        f"the values of these keys add up to {size} bytes, over the limit of {budget} bytes "
        "(--max-batch-bytes); ask for fewer keys"
    )


class KVService(kv_pb2_grpc.KVServicer):
    """Checks each request against the limits, then hands it to the coordinator or the scanner."""

    def __init__(
        self,
        coordinator: Coordinator,
        scanner: Scanner,
        limits: Limits,
        default_level: Level,
    ) -> None:
        self.coordinator = coordinator
        self.scanner = scanner
        self.limits = limits
        self.default_level = default_level

    def _level(self, value: int) -> Level:
        return resolve(value, self.default_level)

    async def _write(
        self, request: kv_pb2.PutRequest | kv_pb2.DeleteRequest, value: bytes, tombstone: bool
    ) -> tuple[types_pb2.Version, types_pb2.KeyValue | None]:
        """A put or a delete: (the new version, the replaced value if asked for)."""
        check_key(request.key, self.limits)
        check_value(value, self.limits)
        result = await self.coordinator.write(
            request.key,
            value,
            tombstone=tombstone,
            level=self._level(request.consistency),
            want_previous=request.return_previous,
        )
        return result.version.to_proto(), _previous(request.key, result, request.return_previous)

    @handler("Put")
    async def Put(self, request: kv_pb2.PutRequest, context: Ctx) -> kv_pb2.PutResponse:
        version, previous = await self._write(request, request.value, tombstone=False)
        return kv_pb2.PutResponse(version=version, previous=previous)

    @handler("Get")
    async def Get(self, request: kv_pb2.GetRequest, context: Ctx) -> kv_pb2.GetResponse:
        check_key(request.key, self.limits)
        records = await self.coordinator.read([request.key], self._level(request.consistency))
        return _found(request.key, records[0])

    @handler("Delete")
    async def Delete(self, request: kv_pb2.DeleteRequest, context: Ctx) -> kv_pb2.DeleteResponse:
        version, previous = await self._write(request, b"", tombstone=True)
        return kv_pb2.DeleteResponse(version=version, previous=previous)

    @handler("Scan")
    async def Scan(self, request: kv_pb2.ScanRequest, context: Ctx) -> kv_pb2.ScanResponse:
        limit = request.limit or DEFAULT_SCAN_LIMIT
        if limit > self.limits.max_batch_items:
            raise InvalidArgument(
                f"scan limit {limit} is over the limit of {self.limits.max_batch_items} items "
                "(--max-batch-items)"
            )
        if request.end_key and request.end_key <= request.start_key:
            raise InvalidArgument("end_key must be greater than start_key")
        page = await self.scanner.scan(
            start=request.start_key,
            end=request.end_key,
            prefix=request.prefix,
            limit=limit,
            keys_only=request.keys_only,
            token=request.continuation_token,
            level=self._level(request.consistency),
        )
        return kv_pb2.ScanResponse(
            kvs=[r.to_key_value(keys_only=request.keys_only) for r in page.records],
            continuation_token=page.token,
        )

    @handler("BatchWrite")
    async def BatchWrite(self, request: kv_pb2.BatchWriteRequest, context: Ctx) -> kv_pb2.BatchWriteResponse:
        mutations = request.mutations
        keys = [m.key for m in mutations]
        values = [m.value for m in mutations]
        check_batch(len(keys), sum(map(len, keys)) + sum(map(len, values)), self.limits)
        check_keys(keys, self.limits, "mutation #{n} key")
        check_values(values, self.limits, "mutation #{n} value")
        versions = await self.coordinator.write_many(
            list(zip(keys, values, [m.delete for m in mutations], strict=True)),
            self._level(request.consistency),
        )
        response = kv_pb2.BatchWriteResponse()
        add = response.versions.add  # built in place: no Version message to copy per item
        for version in versions:
            add(hlc=version.hlc, node_id=version.node_id)
        return response

    @handler("BatchGet")
    async def BatchGet(self, request: kv_pb2.BatchGetRequest, context: Ctx) -> kv_pb2.BatchGetResponse:
        keys = list(request.keys)
        check_batch(len(keys), sum(len(k) for k in keys), self.limits)
        check_keys(keys, self.limits)
        level = self._level(request.consistency)
        single_key_only(level, "read batches")
        unique = list(dict.fromkeys(keys))  # a key named twice is read once
        budget = self.limits.max_batch_bytes
        try:  # each replica refuses to load more than the answer may carry
            answers = await self.coordinator.read(
                unique, level, max_bytes=budget + len(unique) * RECORD_OVERHEAD
            )
        except OverBudget:
            raise _over_budget(budget, "more than") from None
        records = dict(zip(unique, answers, strict=True))
        size = sum(len(record.value) for key in keys if (record := records[key]) is not None)
        if size > budget:
            raise _over_budget(budget, str(size))
        return kv_pb2.BatchGetResponse(
            kvs=[missing(k) if (r := records[k]) is None else r.to_key_value() for k in keys]
        )

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
from kvnode.core.records import MESSAGE_BUDGET, Record, missing
from kvnode.server.admission import Overloaded, answer_budget
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


def _over_budget(budget: int, size: int | None = None) -> InvalidArgument:
    """``size`` None: the replicas refused to load more than the budget, so the total is unknown."""
    total = "more than" if size is None else f"{size} bytes, over"
    return InvalidArgument(
        f"the values of these keys add up to {total} the limit of {budget} bytes "
        "(--max-batch-bytes); ask for fewer keys"
    )


def _set_aside(most: int) -> int:
    """Memory for an answer of up to ``most`` bytes, before anything is loaded; none left: the
    node is overloaded, and the client may try again shortly."""
    granted = answer_budget(most)
    if granted <= 0:
        raise _no_room(most)
    return granted


def _no_room(most: int) -> Overloaded:
    return Overloaded(
        f"the answer may need up to {most} bytes, more than the requests in progress leave of "
        "--max-request-memory; try again shortly"
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
        most = len(request.key) + self.limits.max_value_bytes + RECORD_OVERHEAD
        granted = _set_aside(most)
        try:  # a read with a byte limit skips the peers' batching, so only when memory is short
            records = await self.coordinator.read(
                [request.key],
                self._level(request.consistency),
                max_bytes=None if granted == most else granted,
            )
        except OverBudget:
            raise _no_room(most) from None
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
        most = MESSAGE_BUDGET + self.limits.max_value_bytes + RECORD_OVERHEAD  # a page, at most
        if _set_aside(most) < most:
            raise _no_room(most)
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
        most = budget + len(unique) * RECORD_OVERHEAD
        granted = _set_aside(most)
        try:  # each replica refuses to load more than the answer may carry
            answers = await self.coordinator.read(unique, level, max_bytes=granted)
        except OverBudget:
            if granted < most:  # it might fit once other requests are done
                raise _no_room(most) from None
            raise _over_budget(budget) from None
        records = dict(zip(unique, answers, strict=True))
        size = sum(len(record.value) for key in keys if (record := records[key]) is not None)
        if size > budget:
            raise _over_budget(budget, size)
        return kv_pb2.BatchGetResponse(
            kvs=[missing(k) if (r := records[k]) is None else r.to_key_value() for k in keys]
        )

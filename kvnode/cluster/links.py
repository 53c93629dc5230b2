"""A channel to one peer: batched Replica calls, the clock exchange, and whether the peer answers.

Calls to a peer for client traffic are batched (see ``batching``); repairs, scans and transfers are
already batches and go out as they are. A link that has waited too long for an answer counts as
stalled, and new client traffic fails at once instead of queueing behind it. Too long is relative:
several times the peer's recent round trips, never less than :data:`STALL_SECONDS`, so that a
paused or cut-off peer is noticed within a quarter second on an idle cluster, while on a busy one
a batch of large writes that takes half a second does not make a healthy peer look stalled (which
failed other clients' reads with "1 of 3 replicas answered").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from kvnode.api.v1 import admin_pb2, admin_pb2_grpc, replica_pb2, replica_pb2_grpc, types_pb2
from kvnode.cluster.batching import Batcher, InFlight
from kvnode.cluster.clock import ClockAhead, HybridClock
from kvnode.cluster.replica import ApplyItem, ApplyResult, Corrupt, KeyVersionEntry, ReadAnswer, StaleEpoch
from kvnode.core.errors import InvalidArgument, KVError, Unavailable, from_status
from kvnode.core.records import Record, Version
from kvnode.metrics import NodeMetrics
from kvnode.storage.engine import OverBudget

log = logging.getLogger(__name__)

T = TypeVar("T")

PEER_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
]
_STATUS = {code.value[0]: code for code in grpc.StatusCode}
STALL_SECONDS = 0.25
STALL_ROUND_TRIPS = 4
"""A pending call is a stall once it has waited this many of the peer's recent round trips."""
ROUND_TRIP_DECAY = 0.1
"""The recent round trip follows a slower answer at once and a faster one by this fraction (a
peak-sensitive moving average: quick to allow for load, slow to forget it)."""
# How long a busy node's link gathers before its next batch (see ``batching``; the values are the
# best measured, bench/README.md). An apply's round trip includes a commit, so its link waits longer.
READ_LINGER = 0.015
APPLY_LINGER = 0.025


class PeerLink:
    """A channel to one peer, with batching, clock exchange and reachability tracking."""

    def __init__(
        self,
        member_id: str,
        address: str,
        *,
        node_id: str,
        clock: HybridClock,
        epoch: Callable[[], int],
        adopt: Callable[[types_pb2.Membership], Awaitable[None]],
        timeout: float,
        metrics: NodeMetrics,
        in_flight: InFlight | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str = "",
    ) -> None:
        self.id = member_id
        self.address = address
        self._node_id = node_id
        self._clock = clock
        self._epoch = epoch
        self._adopt = adopt
        self._timeout = timeout
        self._metrics = metrics
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=PEER_CHANNEL_OPTIONS)
        else:
            # A peer addressed by IP is checked against the name its certificate carries.
            named = [("grpc.ssl_target_name_override", server_name)] if server_name else []
            options = PEER_CHANNEL_OPTIONS + named
            self._channel = grpc.aio.secure_channel(address, credentials, options=options)
        self._stub = replica_pb2_grpc.ReplicaStub(self._channel)
        self._admin = admin_pb2_grpc.AdminStub(self._channel)
        pressure = (in_flight or InFlight()).pressure
        self._apply = Batcher(
            self._send_apply,
            size_of=lambda item: len(item[0].key) + len(item[0].value) + 64,
            linger=APPLY_LINGER,
            pressure=pressure,
        )
        # Answers carry values of up to 1 MiB each: keep a batched read's answer inside one message.
        self._read = Batcher(
            self._send_read,
            max_items=64,
            size_of=lambda key: len(key) + 16,
            linger=READ_LINGER,
            pressure=pressure,
        )
        self.reachable = True
        self.last_seen = 0.0
        self._started: dict[int, float] = {}
        self._round_trip = 0.0
        self._up = metrics.peer_up.labels(member_id)
        self._up.set(1)

    @property
    def stall_after(self) -> float:
        """How long a client-traffic RPC may wait before the peer counts as stalled."""
        return max(STALL_SECONDS, STALL_ROUND_TRIPS * self._round_trip)

    @property
    def stalled(self) -> bool:
        """A client-traffic RPC to the peer has waited longer than a stall (paused, partitioned)."""
        now, limit = time.monotonic(), self.stall_after
        return any(now - started >= limit for started in self._started.values())

    def _took(self, seconds: float) -> None:
        if seconds > self._round_trip:
            self._round_trip = seconds
        else:
            self._round_trip += ROUND_TRIP_DECAY * (seconds - self._round_trip)

    @property
    def healthy(self) -> bool:
        return self.reachable and not self.stalled

    def _refuse_if_stalled(self) -> None:
        """Fail at once rather than queue behind a hung RPC: the queue would grow for as long as
        the peer hangs, and the coordinator hints the writes and reads elsewhere anyway."""
        if self.stalled:
            raise Unavailable(f"peer {self.id} has not answered for {STALL_SECONDS:g}s")

    async def close(self) -> None:
        await self._channel.close(grace=None)

    def _header(self, repair: bool = False) -> replica_pb2.RequestHeader:
        return replica_pb2.RequestHeader(
            sender=self._node_id, hlc=self._clock.last, epoch=self._epoch(), repair=repair
        )

    async def _call(
        self, method: str, fn: Callable[..., Awaitable[T]], request: Any, *, watch: bool = False
    ) -> T:
        """One RPC. ``watch`` (client traffic) lets a slow answer mark the peer as stalled."""
        token = id(request)
        started = time.monotonic()
        if watch:
            self._started[token] = started
        try:
            response: Any = await fn(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            self._metrics.replica_rpcs.labels(self.id, method, exc.code().name).inc()
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._mark(False)
            raise _to_error(self.id, exc) from None
        finally:
            self._started.pop(token, None)
        if watch:
            self._took(time.monotonic() - started)
        self._metrics.replica_rpcs.labels(self.id, method, "OK").inc()
        self._mark(True)
        header = response.header
        try:
            self._clock.observe(header.hlc, f"peer {self.id}'s clock")
        except ClockAhead as exc:
            # The peer did the work, but its answer cannot be trusted: what it did is unknown here.
            self._metrics.clock_refusals.labels(self.id).inc()
            raise Unavailable(exc.message) from None
        if header.HasField("newer_membership"):
            await self._adopt(header.newer_membership)
            raise StaleEpoch(f"peer {self.id} has membership epoch {header.newer_membership.epoch}")
        result: T = response
        return result

    def _mark(self, ok: bool) -> None:
        if ok:
            self.last_seen = time.monotonic()
        if ok != self.reachable:
            log.info("peer %s at %s is %s", self.id, self.address, "reachable" if ok else "unreachable")
            self.reachable = ok
            self._up.set(1 if ok else 0)

    async def membership(self) -> types_pb2.Membership:
        """The peer's membership, to catch up after a restart."""
        try:
            response: types_pb2.Membership = await self._admin.GetMembership(
                admin_pb2.GetMembershipRequest(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            self._mark(exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED))
            raise _to_error(self.id, exc) from None
        self._mark(True)
        return response

    async def apply(self, items: list[ApplyItem], *, repair: bool = False) -> list[ApplyResult]:
        if repair:
            return await self._send_apply(items, repair=True)
        self._refuse_if_stalled()
        return await self._apply.call(items)

    async def _send_apply(self, items: list[ApplyItem], repair: bool = False) -> list[ApplyResult]:
        self._metrics.replica_batch.labels("Apply").observe(len(items))
        request = replica_pb2.ApplyRequest(
            header=self._header(repair),
            items=[replica_pb2.ApplyItem(record=r.to_proto(), return_previous=w) for r, w in items],
        )
        response = await self._call("Apply", self._stub.Apply, request, watch=not repair)
        return [self._outcome(o) for o in response.outcomes]

    def _outcome(self, outcome: replica_pb2.ApplyOutcome) -> ApplyResult:
        if outcome.error_code:
            return from_status(_STATUS[outcome.error_code], f"peer {self.id}: {outcome.error}")
        return outcome.applied, Record.from_proto(outcome.previous) if outcome.had_previous else None

    async def read(self, keys: list[bytes], max_bytes: int | None = None) -> list[ReadAnswer]:
        """Batched with other callers' keys, unless the read has a byte budget of its own (a
        BatchGet): then it goes alone, so that a refusal over its budget is its own."""
        self._refuse_if_stalled()
        if max_bytes is not None:
            return await self._send_read(keys, max_bytes)
        return await self._read.call(keys)

    async def _send_read(self, keys: list[bytes], max_bytes: int | None = None) -> list[ReadAnswer]:
        """One Replica.Read. The peer refuses to load an answer over its message cap; callers'
        keys batched together (no ``max_bytes``) may add up to that with large values, although
        each caller's alone fits, so such a batch is split in two and each half sent again."""
        self._metrics.replica_batch.labels("Read").observe(len(keys))
        request = replica_pb2.ReadRequest(header=self._header(), keys=keys, max_bytes=max_bytes or 0)
        try:
            response = await self._call("Read", self._stub.Read, request, watch=True)
        except InvalidArgument as exc:
            if OverBudget.PHRASE not in exc.message:
                raise
            if max_bytes is not None:
                raise OverBudget(max_bytes + 1, max_bytes) from None
            if len(keys) == 1:
                raise
            half = len(keys) // 2
            first, second = await asyncio.gather(self._send_read(keys[:half]), self._send_read(keys[half:]))
            return first + second
        return [_answer(self.id, key, r) for key, r in zip(keys, response.results, strict=True)]

    async def scan(
        self, start: bytes, end: bytes, prefix: bytes, limit: int, keys_only: bool
    ) -> tuple[list[Record], bool]:
        request = replica_pb2.ReplicaScanRequest(
            header=self._header(),
            start_key=start,
            end_key=end,
            prefix=prefix,
            limit=limit,
            keys_only=keys_only,
        )
        response = await self._call("Scan", self._stub.Scan, request)
        return [Record.from_proto(r) for r in response.records], response.exhausted

    async def digests(self, partitions: list[int]) -> list[tuple[int, bytes, int]]:
        request = replica_pb2.DigestsRequest(header=self._header(repair=True), partitions=partitions)
        response = await self._call("Digests", self._stub.Digests, request)
        return [(d.partition, d.digest, d.records) for d in response.digests]

    async def key_versions(
        self, partition: int, after: bytes, limit: int
    ) -> tuple[list[KeyVersionEntry], bool]:
        request = replica_pb2.KeyVersionsRequest(
            header=self._header(repair=True), partition=partition, after_key=after, limit=limit
        )
        response = await self._call("KeyVersions", self._stub.KeyVersions, request)
        entries = [(e.key, Version.from_proto(e.version), e.tombstone) for e in response.entries]
        return entries, response.exhausted

    async def fetch_partition(self, partition: int, after: bytes, limit: int) -> tuple[list[Record], bool]:
        request = replica_pb2.FetchPartitionRequest(
            header=self._header(repair=True), partition=partition, after_key=after, limit=limit
        )
        response = await self._call("FetchPartition", self._stub.FetchPartition, request)
        return [Record.from_proto(r) for r in response.records], response.exhausted


def _answer(peer: str, key: bytes, result: replica_pb2.ReadResult) -> ReadAnswer:
    if result.corrupt:
        return Corrupt(key, f"the copy on {peer} failed its check")
    return Record.from_proto(result.record) if result.found else None


def _to_error(peer: str, exc: grpc.aio.AioRpcError) -> KVError:
    return from_status(exc.code(), f"peer {peer}: {exc.details()}")

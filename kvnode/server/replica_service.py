"""The internal Replica service: what a node does when another node coordinates a request.

Every message advances this node's clock past the sender's, unless the sender's clock is too far
ahead (--max-clock-offset): then the request is refused. Records are checked one by one
(:class:`~kvnode.cluster.checks.RecordCheck`): a refused record gets its reason in its outcome and
the others of its request are stored. A coordinated request (not a repair)
from a sender with an older membership epoch is not carried out: the response carries the newer
membership instead, and the sender adopts it and plans again.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from kvnode.api.v1 import replica_pb2, replica_pb2_grpc
from kvnode.cluster.clock import ClockAhead, HybridClock
from kvnode.cluster.local import LocalReplica
from kvnode.cluster.replica import ApplyResult, Corrupt, ReadAnswer
from kvnode.cluster.topology import Topology
from kvnode.config import Limits
from kvnode.core.errors import InvalidArgument, KVError
from kvnode.core.logs import RateLimitedLog
from kvnode.core.records import Record
from kvnode.metrics import NodeMetrics
from kvnode.server.rpc import handler
from kvnode.server.validation import check_bound, check_page, check_partitions, check_peer_keys

Ctx = grpc.aio.ServicerContext[Any, Any]
refusals = RateLimitedLog(logging.getLogger(__name__))


class ReplicaService(replica_pb2_grpc.ReplicaServicer):
    """Answers peers from this node's own store (:class:`LocalReplica`)."""

    def __init__(
        self,
        local: LocalReplica,
        topology: Topology,
        clock: HybridClock,
        metrics: NodeMetrics,
        limits: Limits,
    ) -> None:
        self.local = local
        self.topology = topology
        self.clock = clock
        self.metrics = metrics
        self.limits = limits

    def _accept(self, header: replica_pb2.RequestHeader) -> replica_pb2.ResponseHeader | None:
        """Observe the sender's clock (refusing one too far ahead, which is counted and logged);
        a header carrying our newer membership if we must refuse."""
        try:
            self.clock.observe(header.hlc, f"the clock of {header.sender or 'the sender'}")
        except ClockAhead as exc:
            self.metrics.clock_refusals.labels(header.sender).inc()
            refusals.log(f"clock/{header.sender}", logging.WARNING, "refused a request: %s", exc.message)
            raise
        membership = self.topology.membership
        if not header.repair and header.epoch < membership.epoch:
            return replica_pb2.ResponseHeader(hlc=self.clock.last, newer_membership=membership.to_proto())
        return None

    def _page(self, request: replica_pb2.KeyVersionsRequest | replica_pb2.FetchPartitionRequest) -> int:
        check_partitions([request.partition], self.topology.membership.partitions)
        check_bound("after_key", request.after_key)
        return check_page(request.limit)

    def _header(self) -> replica_pb2.ResponseHeader:
        return replica_pb2.ResponseHeader(hlc=self.clock.last)

    @handler("Replica/Apply")
    async def Apply(self, request: replica_pb2.ApplyRequest, context: Ctx) -> replica_pb2.ApplyResponse:
        if (refusal := self._accept(request.header)) is not None:
            return replica_pb2.ApplyResponse(header=refusal)
        items = [(Record.from_proto(i.record), i.return_previous) for i in request.items]
        outcomes = await self.local.apply(items, repair=request.header.repair)
        return replica_pb2.ApplyResponse(
            header=self._header(), outcomes=[self._outcome(o, request.header.sender) for o in outcomes]
        )

    def _outcome(self, outcome: ApplyResult, sender: str) -> replica_pb2.ApplyOutcome:
        if isinstance(outcome, KVError):
            reason = "clock" if isinstance(outcome, ClockAhead) else outcome.code.name.lower()
            self.metrics.refused_records.labels(sender, reason).inc()
            refusals.log(
                f"record/{sender}/{reason}",
                logging.WARNING,
                "refused a record from %s: %s",
                sender,
                outcome.message,
            )
            return replica_pb2.ApplyOutcome(error_code=outcome.code.value[0], error=outcome.message)
        applied, previous = outcome
        if previous is None:
            return replica_pb2.ApplyOutcome(applied=applied)
        return replica_pb2.ApplyOutcome(applied=applied, had_previous=True, previous=previous.to_proto())

    @handler("Replica/Read")
    async def Read(self, request: replica_pb2.ReadRequest, context: Ctx) -> replica_pb2.ReadResponse:
        if (refusal := self._accept(request.header)) is not None:
            return replica_pb2.ReadResponse(header=refusal)
        keys = list(request.keys)
        check_peer_keys(keys, self.limits)
        answers = await self.local.read(keys, request.max_bytes or self.limits.grpc_message_bytes)
        return replica_pb2.ReadResponse(header=self._header(), results=[_read_result(a) for a in answers])

    @handler("Replica/Scan")
    async def Scan(
        self, request: replica_pb2.ReplicaScanRequest, context: Ctx
    ) -> replica_pb2.ReplicaScanResponse:
        if (refusal := self._accept(request.header)) is not None:
            return replica_pb2.ReplicaScanResponse(header=refusal)
        for name in ("start_key", "end_key", "prefix"):
            check_bound(name, getattr(request, name))
        if request.limit > self.limits.max_batch_items:
            raise InvalidArgument(f"scan limit {request.limit} is over {self.limits.max_batch_items}")
        records, exhausted = await self.local.scan(
            request.start_key, request.end_key, request.prefix, request.limit or 1000, request.keys_only
        )
        return replica_pb2.ReplicaScanResponse(
            header=self._header(), records=[r.to_proto() for r in records], exhausted=exhausted
        )

    @handler("Replica/Digests")
    async def Digests(self, request: replica_pb2.DigestsRequest, context: Ctx) -> replica_pb2.DigestsResponse:
        self._accept(request.header)
        check_partitions(request.partitions, self.topology.membership.partitions)
        digests = await self.local.digests(list(request.partitions))
        return replica_pb2.DigestsResponse(
            header=self._header(),
            digests=[replica_pb2.PartitionDigest(partition=p, digest=d, records=c) for p, d, c in digests],
        )

    @handler("Replica/KeyVersions")
    async def KeyVersions(
        self, request: replica_pb2.KeyVersionsRequest, context: Ctx
    ) -> replica_pb2.KeyVersionsResponse:
        self._accept(request.header)
        limit = self._page(request)
        entries, exhausted = await self.local.key_versions(request.partition, request.after_key, limit)
        return replica_pb2.KeyVersionsResponse(
            header=self._header(),
            entries=[replica_pb2.KeyVersion(key=k, version=v.to_proto(), tombstone=t) for k, v, t in entries],
            exhausted=exhausted,
        )

    @handler("Replica/FetchPartition")
    async def FetchPartition(
        self, request: replica_pb2.FetchPartitionRequest, context: Ctx
    ) -> replica_pb2.FetchPartitionResponse:
        self._accept(request.header)
        limit = self._page(request)
        records, exhausted = await self.local.fetch_partition(request.partition, request.after_key, limit)
        return replica_pb2.FetchPartitionResponse(
            header=self._header(), records=[r.to_proto() for r in records], exhausted=exhausted
        )


def _read_result(answer: ReadAnswer) -> replica_pb2.ReadResult:
    """A copy that failed its check is reported as such, never sent."""
    if answer is None:
        return replica_pb2.ReadResult()
    if isinstance(answer, Corrupt):
        return replica_pb2.ReadResult(corrupt=True)
    return replica_pb2.ReadResult(found=True, record=answer.to_proto())

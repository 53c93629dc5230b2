"""The internal Replica service: what a node does when another node coordinates a request.

Every message advances this node's clock past the sender's. A coordinated request (not a repair)
from a sender with an older membership epoch is not carried out: the response carries the newer
membership instead, and the sender adopts it and plans again.
"""

from __future__ import annotations

from typing import Any

import grpc

from kvnode.api.v1 import replica_pb2, replica_pb2_grpc
from kvnode.cluster.clock import HybridClock
from kvnode.cluster.local import LocalReplica
from kvnode.cluster.topology import Topology
from kvnode.core.records import Record
from kvnode.server.rpc import handler

Ctx = grpc.aio.ServicerContext[Any, Any]


class ReplicaService(replica_pb2_grpc.ReplicaServicer):
    """Answers peers from this node's own store (:class:`LocalReplica`)."""

    def __init__(
        self,
        local: LocalReplica,
        topology: Topology,
        clock: HybridClock,
    ) -> None:
        self.local = local
        self.topology = topology
        self.clock = clock

    def _accept(self, header: replica_pb2.RequestHeader) -> replica_pb2.ResponseHeader | None:
        """Observe the sender's clock; a header carrying our newer membership if we must refuse."""
        self.clock.observe(header.hlc)
        membership = self.topology.membership
        if not header.repair and header.epoch < membership.epoch:
            return replica_pb2.ResponseHeader(hlc=self.clock.last, newer_membership=membership.to_proto())
        return None

    def _header(self) -> replica_pb2.ResponseHeader:
        return replica_pb2.ResponseHeader(hlc=self.clock.last)

    @handler("Replica/Apply")
    async def Apply(self, request: replica_pb2.ApplyRequest, context: Ctx) -> replica_pb2.ApplyResponse:
        if (refusal := self._accept(request.header)) is not None:
            return replica_pb2.ApplyResponse(header=refusal)
        items = [(Record.from_proto(i.record), i.return_previous) for i in request.items]
        outcomes = await self.local.apply(items, repair=request.header.repair)
        return replica_pb2.ApplyResponse(
            header=self._header(),
            outcomes=[
                replica_pb2.ApplyOutcome(applied=applied)
                if previous is None
                else replica_pb2.ApplyOutcome(
                    applied=applied, had_previous=True, previous=previous.to_proto()
                )
                for applied, previous in outcomes
            ],
        )

    @handler("Replica/Read")
    async def Read(self, request: replica_pb2.ReadRequest, context: Ctx) -> replica_pb2.ReadResponse:
        if (refusal := self._accept(request.header)) is not None:
            return replica_pb2.ReadResponse(header=refusal)
        records = await self.local.read(list(request.keys))
        return replica_pb2.ReadResponse(
            header=self._header(),
            results=[
                replica_pb2.ReadResult()
                if r is None
                else replica_pb2.ReadResult(found=True, record=r.to_proto())
                for r in records
            ],
        )

    @handler("Replica/Scan")
    async def Scan(
        self, request: replica_pb2.ReplicaScanRequest, context: Ctx
    ) -> replica_pb2.ReplicaScanResponse:
        if (refusal := self._accept(request.header)) is not None:
            return replica_pb2.ReplicaScanResponse(header=refusal)
        records, exhausted = await self.local.scan(
            request.start_key, request.end_key, request.prefix, request.limit or 1000, request.keys_only
        )
        return replica_pb2.ReplicaScanResponse(
            header=self._header(), records=[r.to_proto() for r in records], exhausted=exhausted
        )

    @handler("Replica/Digests")
    async def Digests(self, request: replica_pb2.DigestsRequest, context: Ctx) -> replica_pb2.DigestsResponse:
        self._accept(request.header)
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
        entries, exhausted = await self.local.key_versions(
            request.partition, request.after_key, request.limit or 1000
        )
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
        records, exhausted = await self.local.fetch_partition(
            request.partition, request.after_key, request.limit or 1000
        )
        return replica_pb2.FetchPartitionResponse(
            header=self._header(), records=[r.to_proto() for r in records], exhausted=exhausted
        )

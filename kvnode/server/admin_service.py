"""The Admin service: status, membership, data movement and backups, for the operator and kvctl."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import grpc

from kvnode import backup
from kvnode.api.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from kvnode.core.errors import InvalidArgument
from kvnode.core.levels import Level, resolve
from kvnode.core.membership import Membership
from kvnode.server.rpc import handler

if TYPE_CHECKING:
    from kvnode.node import Node

Ctx = grpc.aio.ServicerContext[Any, Any]
RESTORE_CHUNK = 500


def _manifest_proto(m: backup.Manifest) -> admin_pb2.BackupManifest:
    return admin_pb2.BackupManifest(
        backup_id=m.backup_id,
        node_id=m.node_id,
        epoch=m.epoch,
        keys=m.keys,
        tombstones=m.tombstones,
        sha256=m.sha256,
        size_bytes=m.size_bytes,
        created_unix=m.created_unix,
        path=m.path,
        partitions=m.partitions,
        replication_factor=m.replication_factor,
    )


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(self, node: Node) -> None:
        self.node = node
        self.metrics = node.metrics
        self.default_level = node.default_level

    @handler("Admin/Status")
    async def Status(self, request: admin_pb2.StatusRequest, context: Ctx) -> admin_pb2.StatusResponse:
        node = self.node
        stats = node.storage.stats()
        placement = node.topology.placement
        totals = node.hints.totals()
        now = time.monotonic()
        peers = [
            admin_pb2.PeerStatus(
                id=link.id,
                address=link.address,
                reachable=link.reachable,
                last_seen_ms_ago=int((now - link.last_seen) * 1000) if link.last_seen else 0,
                hints_pending=totals.get(link.id, (0, 0))[0],
            )
            for link in node.replicas.peers
        ]
        return admin_pb2.StatusResponse(
            node_id=node.config.node_id,
            epoch=node.topology.epoch,
            partitions_owned=len(placement.owned(node.config.node_id)),
            keys=stats.keys,
            tombstones=stats.tombstones,
            hints_pending=sum(n for n, _ in totals.values()),
            hint_bytes=sum(b for _, b in totals.values()),
            peers=peers,
            rebuilding=node.replicas.local.rebuilding,
            transfer=node.transfers.status.to_proto(),
            map_size_bytes=stats.map_size,
            used_bytes=stats.used_bytes,
            version=node.version,
            last_backup_unix=node.last_backup_unix,
            replication_factor=placement.membership.replication_factor,
            partitions=placement.partitions,
        )

    @handler("Admin/GetMembership")
    async def GetMembership(
        self, request: admin_pb2.GetMembershipRequest, context: Ctx
    ) -> types_pb2.Membership:
        return self.node.topology.membership.to_proto()

    @handler("Admin/SetMembership")
    async def SetMembership(
        self, request: admin_pb2.SetMembershipRequest, context: Ctx
    ) -> admin_pb2.SetMembershipResponse:
        try:
            membership = Membership.from_proto(request.membership)
        except ValueError as exc:
            raise InvalidArgument(f"invalid membership: {exc}") from None
        await self.node.topology.install(membership, drain_seconds=self.node.config.replica_timeout * 2)
        return admin_pb2.SetMembershipResponse(epoch=self.node.topology.epoch)

    @handler("Admin/Join")
    async def Join(self, request: admin_pb2.JoinRequest, context: Ctx) -> admin_pb2.TransferStatus:
        return self.node.transfers.start("join").to_proto()

    @handler("Admin/Decommission")
    async def Decommission(
        self, request: admin_pb2.DecommissionRequest, context: Ctx
    ) -> admin_pb2.TransferStatus:
        return self.node.transfers.start("decommission").to_proto()

    @handler("Admin/RunAntiEntropy")
    async def RunAntiEntropy(
        self, request: admin_pb2.RunAntiEntropyRequest, context: Ctx
    ) -> admin_pb2.RunAntiEntropyResponse:
        stats = await self.node.anti_entropy.run_round()
        return admin_pb2.RunAntiEntropyResponse(
            partitions_compared=stats.compared,
            partitions_differing=stats.differing,
            records_pushed=stats.pushed,
            records_pulled=stats.pulled,
        )

    @handler("Admin/PartitionDigests")
    async def PartitionDigests(
        self, request: admin_pb2.PartitionDigestsRequest, context: Ctx
    ) -> admin_pb2.PartitionDigestsResponse:
        node = self.node
        parts = list(request.partitions) or None
        return admin_pb2.PartitionDigestsResponse(
            node_id=node.config.node_id,
            epoch=node.topology.epoch,
            digests=[
                admin_pb2.PartitionDigestEntry(partition=p, digest=d, records=c)
                for p, d, c in node.storage.digests(parts)
            ],
        )

    @handler("Admin/Backup")
    async def Backup(self, request: admin_pb2.BackupRequest, context: Ctx) -> admin_pb2.BackupManifest:
        return _manifest_proto(await self.node.take_backup(request.directory, request.backup_id))

    @handler("Admin/VerifyBackup")
    async def VerifyBackup(
        self, request: admin_pb2.VerifyBackupRequest, context: Ctx
    ) -> admin_pb2.VerifyBackupResponse:
        manifests, problems = await asyncio.to_thread(
            backup.verify, request.directory, request.backup_id, request.node_id
        )
        return admin_pb2.VerifyBackupResponse(
            ok=not problems, manifests=[_manifest_proto(m) for m in manifests], problems=problems
        )

    @handler("Admin/ListBackups")
    async def ListBackups(
        self, request: admin_pb2.ListBackupsRequest, context: Ctx
    ) -> admin_pb2.ListBackupsResponse:
        backups = await asyncio.to_thread(backup.list_backups, request.directory)
        return admin_pb2.ListBackupsResponse(
            backups=[
                admin_pb2.BackupSummary(
                    backup_id=ms[0].backup_id,
                    node_ids=[m.node_id for m in ms],
                    created_unix=min(m.created_unix for m in ms),
                    keys=max(m.keys for m in ms),
                )
                for ms in backups
            ]
        )

    @handler("Admin/DeleteBackup")
    async def DeleteBackup(
        self, request: admin_pb2.DeleteBackupRequest, context: Ctx
    ) -> admin_pb2.DeleteBackupResponse:
        deleted = await asyncio.to_thread(backup.delete_backup, request.directory, request.backup_id)
        return admin_pb2.DeleteBackupResponse(deleted=deleted)

    @handler("Admin/Restore")
    async def Restore(self, request: admin_pb2.RestoreRequest, context: Ctx) -> admin_pb2.RestoreResponse:
        level = resolve(request.consistency, Level.QUORUM)
        if level is Level.LINEARIZABLE:
            raise InvalidArgument("restore writes at ONE, QUORUM or ALL")
        records, keys = await self.node.restore(request.directory, request.backup_id, level)
        return admin_pb2.RestoreResponse(records=records, keys=keys)

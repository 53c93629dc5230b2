"""The Admin service: status, membership, data movement and backups, for the operator and kvctl.

It takes the small parts it drives, each behind a protocol that names only what the service uses,
so it never reaches into the node as a whole.
"""

from __future__ import annotations

from typing import Any, Protocol

import grpc

from kvnode.api.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from kvnode.backup.snapshots import Manifest
from kvnode.cluster.antientropy import RoundStats
from kvnode.cluster.transfer import TransferStatus
from kvnode.core.errors import InvalidArgument
from kvnode.core.levels import Level, resolve
from kvnode.core.membership import Membership
from kvnode.server.confinement import BackupRoot
from kvnode.server.rpc import handler
from kvnode.server.validation import check_partitions

Ctx = grpc.aio.ServicerContext[Any, Any]


class StatusSource(Protocol):
    def status(self) -> admin_pb2.StatusResponse: ...


class MembershipControl(Protocol):
    @property
    def membership(self) -> Membership: ...

    async def change(self, membership: Membership, *, drain_seconds: float = 0.0) -> bool: ...


class TransferControl(Protocol):
    def start(self, kind: str) -> TransferStatus: ...


class Repairs(Protocol):
    async def run_round(self) -> RoundStats: ...


class DigestSource(Protocol):
    def digests(self, partitions: list[int] | None = None) -> list[tuple[int, bytes, int]]: ...


class BackupControl(Protocol):
    async def take(self, directory: str, backup_id: str) -> Manifest: ...

    async def verify(
        self, directory: str, backup_id: str, node_id: str = ""
    ) -> tuple[list[Manifest], list[str]]: ...

    async def list(self, directory: str) -> list[list[Manifest]]: ...

    async def delete(self, directory: str, backup_id: str) -> bool: ...

    async def restore(self, directory: str, backup_id: str, level: Level) -> tuple[int, int]: ...


def _manifest_proto(m: Manifest) -> admin_pb2.BackupManifest:
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
    """Admin RPCs, each handed to the part that does it. ``drain_seconds`` is how long installing a
    new membership waits for requests planned under the old one."""

    def __init__(
        self,
        node_id: str,
        *,
        status: StatusSource,
        membership: MembershipControl,
        transfers: TransferControl,
        repairs: Repairs,
        digests: DigestSource,
        backups: BackupControl,
        drain_seconds: float,
        backup_root: BackupRoot | None = None,
    ) -> None:
        self._node_id = node_id
        self._status = status
        self._membership = membership
        self._transfers = transfers
        self._repairs = repairs
        self._digests = digests
        self._backups = backups
        self._drain_seconds = drain_seconds
        self._root = backup_root or BackupRoot(None)

    @handler("Admin/Status")
    async def Status(self, request: admin_pb2.StatusRequest, context: Ctx) -> admin_pb2.StatusResponse:
        return self._status.status()

    @handler("Admin/GetMembership")
    async def GetMembership(
        self, request: admin_pb2.GetMembershipRequest, context: Ctx
    ) -> types_pb2.Membership:
        return self._membership.membership.to_proto()

    @handler("Admin/SetMembership")
    async def SetMembership(
        self, request: admin_pb2.SetMembershipRequest, context: Ctx
    ) -> admin_pb2.SetMembershipResponse:
        try:
            membership = Membership.from_proto(request.membership)
        except ValueError as exc:
            raise InvalidArgument(f"invalid membership: {exc}") from None
        await self._membership.change(membership, drain_seconds=self._drain_seconds)
        return admin_pb2.SetMembershipResponse(epoch=self._membership.membership.epoch)

    @handler("Admin/Join")
    async def Join(self, request: admin_pb2.JoinRequest, context: Ctx) -> admin_pb2.TransferStatus:
        return self._transfers.start("join").to_proto()

    @handler("Admin/Decommission")
    async def Decommission(
        self, request: admin_pb2.DecommissionRequest, context: Ctx
    ) -> admin_pb2.TransferStatus:
        return self._transfers.start("decommission").to_proto()

    @handler("Admin/RunAntiEntropy")
    async def RunAntiEntropy(
        self, request: admin_pb2.RunAntiEntropyRequest, context: Ctx
    ) -> admin_pb2.RunAntiEntropyResponse:
        stats = await self._repairs.run_round()
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
        check_partitions(request.partitions, self._membership.membership.partitions)
        parts = list(request.partitions) or None
        return admin_pb2.PartitionDigestsResponse(
            node_id=self._node_id,
            epoch=self._membership.membership.epoch,
            digests=[
                admin_pb2.PartitionDigestEntry(partition=p, digest=d, records=c)
                for p, d, c in self._digests.digests(parts)
            ],
        )

    @handler("Admin/Backup")
    async def Backup(self, request: admin_pb2.BackupRequest, context: Ctx) -> admin_pb2.BackupManifest:
        return _manifest_proto(
            await self._backups.take(self._root.folder(request.directory), request.backup_id)
        )

    @handler("Admin/VerifyBackup")
    async def VerifyBackup(
        self, request: admin_pb2.VerifyBackupRequest, context: Ctx
    ) -> admin_pb2.VerifyBackupResponse:
        manifests, problems = await self._backups.verify(
            self._root.folder(request.directory), request.backup_id, request.node_id
        )
        return admin_pb2.VerifyBackupResponse(
            ok=not problems, manifests=[_manifest_proto(m) for m in manifests], problems=problems
        )

    @handler("Admin/ListBackups")
    async def ListBackups(
        self, request: admin_pb2.ListBackupsRequest, context: Ctx
    ) -> admin_pb2.ListBackupsResponse:
        backups = await self._backups.list(self._root.folder(request.directory))
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
        return admin_pb2.DeleteBackupResponse(
            deleted=await self._backups.delete(self._root.folder(request.directory), request.backup_id)
        )

    @handler("Admin/Restore")
    async def Restore(self, request: admin_pb2.RestoreRequest, context: Ctx) -> admin_pb2.RestoreResponse:
        level = resolve(request.consistency, Level.QUORUM)
        records, keys = await self._backups.restore(
            self._root.folder(request.directory), request.backup_id, level
        )
        return admin_pb2.RestoreResponse(records=records, keys=keys)

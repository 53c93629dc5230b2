"""Talking to the nodes: gRPC health, the Admin service, and membership changes via Reconfigurer."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kvnode.api.v1 import admin_pb2, types_pb2
from kvnode.errors import KVError
from kvnode.membership import Membership
from kvnode.reconfig import Reconfigurer, admin_call

Progress = Callable[[str], None]


class Health(enum.Enum):
    SERVING = "Serving"
    NOT_SERVING = "NotServing"
    UNREACHABLE = "Unreachable"


@dataclass(frozen=True)
class NodeHealth:
    """What one probe of a node found: its health answer and, if it answered, its Admin status."""

    health: Health
    status: admin_pb2.StatusResponse | None = None
    error: str = ""

    @property
    def rebuilding(self) -> bool:
        return bool(self.status is not None and self.status.rebuilding)

    @property
    def healthy(self) -> bool:
        """Serving, or busy rebuilding a lost volume from its peers (which is not a failure)."""
        return self.health is Health.SERVING or self.rebuilding


class NodeAdmin:
    def __init__(
        self, *, timeout: float, health_timeout: float, transfer_timeout: float, backup_timeout: float
    ):
        self.timeout = timeout
        self.health_timeout = health_timeout
        self.transfer_timeout = transfer_timeout
        self.backup_timeout = backup_timeout

    async def _call(self, address: str, method: str, request: object, timeout: float | None = None) -> object:
        return await admin_call(address, method, request, timeout or self.timeout)

    async def probe(self, address: str) -> NodeHealth:
        """gRPC health of the node's readiness service, then its Admin status."""
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=self.health_timeout
                )
            health = (
                Health.SERVING
                if reply.status == health_pb2.HealthCheckResponse.SERVING
                else Health.NOT_SERVING
            )
        except grpc.aio.AioRpcError as exc:
            return NodeHealth(Health.UNREACHABLE, error=f"{exc.code().name}: {exc.details()}")
        try:
            status = await self.status(address, timeout=self.health_timeout)
        except KVError as exc:
            return NodeHealth(health, error=str(exc))
        return NodeHealth(health, status)

    async def status(self, address: str, timeout: float | None = None) -> admin_pb2.StatusResponse:
        reply = await self._call(address, "Status", admin_pb2.StatusRequest(), timeout)
        assert isinstance(reply, admin_pb2.StatusResponse)
        return reply

    async def membership(self, addresses: Sequence[str]) -> Membership | None:
        """The newest membership any of ``addresses`` holds (asked in parallel, with the health
        timeout, so that a hung node cannot stall an observation); None if none answers."""
        if not addresses:
            return None
        request = admin_pb2.GetMembershipRequest()
        replies = await asyncio.gather(
            *(self._call(a, "GetMembership", request, self.health_timeout) for a in addresses),
            return_exceptions=True,
        )
        answers = [r for r in replies if isinstance(r, types_pb2.Membership)]
        if not answers:
            return None
        try:
            return Membership.from_proto(max(answers, key=lambda m: m.epoch))
        except ValueError:
            return None

    def reconfigurer(self, seeds: Sequence[str], progress: Progress | None = None) -> Reconfigurer:
        return Reconfigurer(
            seeds, timeout=self.timeout, transfer_timeout=self.transfer_timeout, progress=progress
        )

    async def install(self, membership: Membership, seeds: Sequence[str], extra: Sequence[str] = ()) -> None:
        await self.reconfigurer(seeds).install(membership, extra)

    async def backup(self, address: str, directory: str, backup_id: str) -> admin_pb2.BackupManifest:
        request = admin_pb2.BackupRequest(directory=directory, backup_id=backup_id)
        reply = await self._call(address, "Backup", request, self.backup_timeout)
        assert isinstance(reply, admin_pb2.BackupManifest)
        return reply

    async def verify(
        self, address: str, directory: str, backup_id: str, node_id: str = ""
    ) -> admin_pb2.VerifyBackupResponse:
        request = admin_pb2.VerifyBackupRequest(directory=directory, backup_id=backup_id, node_id=node_id)
        reply = await self._call(address, "VerifyBackup", request, self.backup_timeout)
        assert isinstance(reply, admin_pb2.VerifyBackupResponse)
        return reply

    async def list_backups(self, address: str, directory: str) -> list[admin_pb2.BackupSummary]:
        reply = await self._call(address, "ListBackups", admin_pb2.ListBackupsRequest(directory=directory))
        assert isinstance(reply, admin_pb2.ListBackupsResponse)
        return list(reply.backups)

    async def delete_backup(self, address: str, directory: str, backup_id: str) -> bool:
        request = admin_pb2.DeleteBackupRequest(directory=directory, backup_id=backup_id)
        reply = await self._call(address, "DeleteBackup", request)
        assert isinstance(reply, admin_pb2.DeleteBackupResponse)
        return reply.deleted

    async def restore(self, address: str, directory: str, backup_id: str) -> admin_pb2.RestoreResponse:
        request = admin_pb2.RestoreRequest(
            directory=directory, backup_id=backup_id, consistency=types_pb2.CONSISTENCY_QUORUM
        )
        reply = await self._call(address, "Restore", request, self.backup_timeout)
        assert isinstance(reply, admin_pb2.RestoreResponse)
        return reply

    async def probe_all(self, addresses: dict[str, str]) -> dict[str, NodeHealth]:
        """Probe every ``name -> address`` at once."""
        names = list(addresses)
        results = await asyncio.gather(*(self.probe(addresses[n]) for n in names))
        return dict(zip(names, results, strict=True))

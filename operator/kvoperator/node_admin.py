"""Talking to the kvnode processes: gRPC health, the Admin service, and membership changes through
Reconfigurer.

Every call opens its own channel and closes it: pods come and go with new addresses, and a channel
kept for each would live on after its pod. (Kubernetes pods and nodes, the objects, are pods.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from kvnode.api.v1 import admin_pb2
from kvnode.client.admin import AsyncAdmin
from kvnode.client.credentials import Credentials
from kvnode.client.reconfig import Reconfigurer
from kvnode.core.errors import KVError
from kvnode.core.membership import Membership

Progress = Callable[[str], None]


class Health(enum.Enum):
    """A node's answer to the readiness health check (or none)."""

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


class MembershipChanger(Protocol):
    """The part of :class:`Reconfigurer` the membership step drives."""

    async def install(self, membership: Membership, extra: Sequence[str] = ()) -> None: ...

    async def add(self, member_id: str, address: str, peer_address: str = "") -> Membership: ...

    async def remove(self, member_id: str) -> Membership: ...


class NodeAdminApi(Protocol):
    """What the operator asks of the nodes. :class:`NodeAdmin` asks over gRPC; the step tests use
    a fake that answers from memory."""

    def for_store(self, credentials: Credentials | None) -> NodeAdminApi:
        """The same, presenting ``credentials`` to one store's nodes (its CA and the operator's
        ``kvstore:admin`` certificate)."""
        ...

    async def probe_all(self, addresses: dict[str, str]) -> dict[str, NodeHealth]: ...

    async def membership(self, addresses: Sequence[str]) -> Membership | None: ...

    def reconfigurer(
        self, seeds: Sequence[str], progress: Progress | None = None
    ) -> AbstractAsyncContextManager[MembershipChanger]: ...

    async def backup(self, address: str, directory: str, backup_id: str) -> admin_pb2.BackupManifest: ...

    async def verify(
        self, address: str, directory: str, backup_id: str, node_id: str = ""
    ) -> admin_pb2.VerifyBackupResponse: ...

    async def list_backups(self, address: str, directory: str) -> list[admin_pb2.BackupSummary]: ...

    async def delete_backup(self, address: str, directory: str, backup_id: str) -> bool: ...

    async def restore(self, address: str, directory: str, backup_id: str) -> admin_pb2.RestoreResponse: ...


class NodeAdmin:
    """:class:`NodeAdminApi` over gRPC, with the operator's deadlines for each kind of call."""

    def __init__(
        self,
        *,
        timeout: float,
        health_timeout: float,
        transfer_timeout: float,
        backup_timeout: float,
        credentials: Credentials | None = None,
    ):
        self.timeout = timeout
        self.health_timeout = health_timeout
        self.transfer_timeout = transfer_timeout
        self.backup_timeout = backup_timeout
        self.credentials = credentials

    def for_store(self, credentials: Credentials | None) -> NodeAdmin:
        return NodeAdmin(
            timeout=self.timeout,
            health_timeout=self.health_timeout,
            transfer_timeout=self.transfer_timeout,
            backup_timeout=self.backup_timeout,
            credentials=credentials,
        )

    def _admin(self, timeout: float | None = None) -> AsyncAdmin:
        return AsyncAdmin.connect(timeout=timeout or self.timeout, credentials=self.credentials)

    async def probe(self, address: str) -> NodeHealth:
        """gRPC health of the node's readiness service, then its Admin status."""
        async with self._admin(self.health_timeout) as admin:
            try:
                health = Health.SERVING if await admin.health(address) else Health.NOT_SERVING
            except KVError as exc:
                return NodeHealth(Health.UNREACHABLE, error=f"{exc.code.name}: {exc.message}")
            try:
                status = await admin.status(address)
            except KVError as exc:
                return NodeHealth(health, error=str(exc))
        return NodeHealth(health, status)

    async def probe_all(self, addresses: dict[str, str]) -> dict[str, NodeHealth]:
        """Probe every ``name -> address`` at once."""
        names = list(addresses)
        results = await asyncio.gather(*(self.probe(addresses[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def membership(self, addresses: Sequence[str]) -> Membership | None:
        """The newest membership any of ``addresses`` holds (asked in parallel, with the health
        timeout, so that a hung node cannot stall an observation); None if none answers."""
        if not addresses:
            return None
        async with self._admin(self.health_timeout) as admin:
            replies = await asyncio.gather(*(admin.membership(a) for a in addresses), return_exceptions=True)
        answers = [r for r in replies if isinstance(r, Membership)]
        return max(answers, key=lambda m: m.epoch) if answers else None

    @contextlib.asynccontextmanager
    async def reconfigurer(
        self, seeds: Sequence[str], progress: Progress | None = None
    ) -> AsyncIterator[Reconfigurer]:
        async with Reconfigurer.connect(
            seeds,
            timeout=self.timeout,
            transfer_timeout=self.transfer_timeout,
            progress=progress,
            credentials=self.credentials,
        ) as reconfig:
            yield reconfig

    async def backup(self, address: str, directory: str, backup_id: str) -> admin_pb2.BackupManifest:
        async with self._admin(self.backup_timeout) as admin:
            return await admin.backup(address, directory, backup_id)

    async def verify(
        self, address: str, directory: str, backup_id: str, node_id: str = ""
    ) -> admin_pb2.VerifyBackupResponse:
        async with self._admin(self.backup_timeout) as admin:
            return await admin.verify_backup(directory, backup_id, node_id, address=address)

    async def list_backups(self, address: str, directory: str) -> list[admin_pb2.BackupSummary]:
        async with self._admin() as admin:
            return list((await admin.list_backups(directory, address=address)).backups)

    async def delete_backup(self, address: str, directory: str, backup_id: str) -> bool:
        async with self._admin() as admin:
            return await admin.delete_backup(directory, backup_id, address=address)

    async def restore(self, address: str, directory: str, backup_id: str) -> admin_pb2.RestoreResponse:
        async with self._admin(self.backup_timeout) as admin:
            return await admin.restore(directory, backup_id, consistency="QUORUM", address=address)

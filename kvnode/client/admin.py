"""Admin calls: status, membership, data movement and backups.

Most of them concern one node, so they take its address and go only there (with retries, but no
failover to another node, which would answer for itself instead). Calls whose answer does not
depend on the node take ``address=None`` to mean "any configured endpoint". Replies are the
protobuf messages of ``admin.proto``: these are operator tools, and the messages are their
documented schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from kvnode.api.v1 import admin_pb2, types_pb2
from kvnode.client import transport as rpc
from kvnode.client.endpoints import Endpoints
from kvnode.client.transport import Caller, Req, Resp
from kvnode.client.types import ConsistencyLike, to_consistency
from kvnode.errors import KVError
from kvnode.membership import Membership

LONG_TIMEOUT = 300.0
"""Default for calls that copy or scan a node's data (anti-entropy, backups, restores)."""


@dataclass(frozen=True)
class EndpointStatus:
    """One endpoint's Admin.Status, or why it could not be had."""

    address: str
    status: admin_pb2.StatusResponse | None
    error: KVError | None = None


class AsyncAdmin:
    def __init__(self, caller: Caller, endpoints: Endpoints) -> None:
        self._caller = caller
        self._endpoints = endpoints

    async def _call(
        self, method: rpc.Rpc[Req, Resp], request: Req, address: str | None, timeout: float | None
    ) -> Resp:
        targets = [address] if address else self._endpoints.order()
        return await self._caller.call(method, request, targets, timeout=timeout)

    async def status(
        self, address: str | None = None, *, timeout: float | None = None
    ) -> admin_pb2.StatusResponse:
        return await self._call(rpc.STATUS, admin_pb2.StatusRequest(), address, timeout)

    async def status_all(
        self, addresses: Iterable[str] | None = None, *, timeout: float | None = None
    ) -> list[EndpointStatus]:
        """Every configured endpoint's status, asked at once; a node that fails is reported, not
        raised, so that one down node does not hide the others."""
        targets = self._endpoints.addresses if addresses is None else list(addresses)

        async def one(address: str) -> EndpointStatus:
            try:
                return EndpointStatus(address, await self.status(address, timeout=timeout))
            except KVError as exc:
                return EndpointStatus(address, None, exc)

        return list(await asyncio.gather(*(one(a) for a in targets)))

    async def membership(self, address: str | None = None, *, timeout: float | None = None) -> Membership:
        reply = await self._call(rpc.GET_MEMBERSHIP, admin_pb2.GetMembershipRequest(), address, timeout)
        return Membership.from_proto(reply)

    async def set_membership(
        self, address: str, membership: Membership | types_pb2.Membership, *, timeout: float | None = None
    ) -> int:
        """Install a membership on one node; returns the epoch the node holds afterwards."""
        message = membership.to_proto() if isinstance(membership, Membership) else membership
        request = admin_pb2.SetMembershipRequest(membership=message)
        return (await self._call(rpc.SET_MEMBERSHIP, request, address, timeout)).epoch

    async def join(self, address: str, *, timeout: float | None = None) -> admin_pb2.TransferStatus:
        return await self._call(rpc.JOIN, admin_pb2.JoinRequest(), address, timeout)

    async def decommission(self, address: str, *, timeout: float | None = None) -> admin_pb2.TransferStatus:
        return await self._call(rpc.DECOMMISSION, admin_pb2.DecommissionRequest(), address, timeout)

    async def run_anti_entropy(
        self, address: str, *, timeout: float | None = LONG_TIMEOUT
    ) -> admin_pb2.RunAntiEntropyResponse:
        return await self._call(rpc.RUN_ANTI_ENTROPY, admin_pb2.RunAntiEntropyRequest(), address, timeout)

    async def partition_digests(
        self, address: str, partitions: Iterable[int] = (), *, timeout: float | None = LONG_TIMEOUT
    ) -> admin_pb2.PartitionDigestsResponse:
        request = admin_pb2.PartitionDigestsRequest(partitions=list(partitions))
        return await self._call(rpc.PARTITION_DIGESTS, request, address, timeout)

    async def backup(
        self, address: str, directory: str, backup_id: str, *, timeout: float | None = LONG_TIMEOUT
    ) -> admin_pb2.BackupManifest:
        request = admin_pb2.BackupRequest(directory=directory, backup_id=backup_id)
        return await self._call(rpc.BACKUP, request, address, timeout)

    async def verify_backup(
        self,
        directory: str,
        backup_id: str,
        node_id: str = "",
        *,
        address: str | None = None,
        timeout: float | None = LONG_TIMEOUT,
    ) -> admin_pb2.VerifyBackupResponse:
        request = admin_pb2.VerifyBackupRequest(directory=directory, backup_id=backup_id, node_id=node_id)
        return await self._call(rpc.VERIFY_BACKUP, request, address, timeout)

    async def list_backups(
        self, directory: str, *, address: str | None = None, timeout: float | None = None
    ) -> admin_pb2.ListBackupsResponse:
        request = admin_pb2.ListBackupsRequest(directory=directory)
        return await self._call(rpc.LIST_BACKUPS, request, address, timeout)

    async def delete_backup(
        self, directory: str, backup_id: str, *, address: str | None = None, timeout: float | None = None
    ) -> bool:
        request = admin_pb2.DeleteBackupRequest(directory=directory, backup_id=backup_id)
        return (await self._call(rpc.DELETE_BACKUP, request, address, timeout)).deleted

    async def restore(
        self,
        directory: str,
        backup_id: str,
        *,
        consistency: ConsistencyLike = None,
        address: str | None = None,
        timeout: float | None = LONG_TIMEOUT,
    ) -> admin_pb2.RestoreResponse:
        request = admin_pb2.RestoreRequest(
            directory=directory,
            backup_id=backup_id,
            consistency=to_consistency(consistency),  # type: ignore[arg-type]
        )
        return await self._call(rpc.RESTORE, request, address, timeout)

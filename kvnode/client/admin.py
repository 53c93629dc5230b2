"""Admin calls: health, status, membership, data movement and backups.

Most of them concern one node, so they take its address and go only there (with retries, but no
failover to another node, which would answer for itself instead). Calls whose answer does not
depend on the node take ``address=None`` to mean "any configured endpoint". Replies are the
protobuf messages of ``admin.proto``: these are operator tools, and the messages are their
documented schema.

This is the one way to call the Admin service: the client's ``admin``, :class:`Reconfigurer`,
kvctl, the operator and the test harness all use it. Those without a KV client open one with
:meth:`AsyncAdmin.connect`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

from grpc_health.v1 import health_pb2

from kvnode.api.v1 import admin_pb2, types_pb2
from kvnode.client import transport as rpc
from kvnode.client.channels import ChannelPool
from kvnode.client.credentials import Credentials
from kvnode.client.endpoints import Endpoints, parse_endpoints
from kvnode.client.retry import RetryPolicy
from kvnode.client.transport import Caller, Req, Resp, Sleep
from kvnode.client.types import ConsistencyLike, to_consistency
from kvnode.core.errors import KVError
from kvnode.core.membership import Membership

LONG_TIMEOUT = 300.0
"""Default for calls that copy or scan a node's data (anti-entropy, backups, restores)."""


@dataclass(frozen=True)
class EndpointStatus:
    """One endpoint's Admin.Status, or why it could not be had."""

    address: str
    status: admin_pb2.StatusResponse | None
    error: KVError | None = None


class AsyncAdmin:
    """Typed Admin calls over a client's channels, or over its own (:meth:`connect`)."""

    def __init__(
        self, caller: Caller, endpoints: Endpoints | None, *, owned: ChannelPool | None = None
    ) -> None:
        self._caller = caller
        self._endpoints = endpoints
        self._owned = owned

    @classmethod
    def connect(
        cls,
        endpoints: str | Iterable[str] = (),
        *,
        timeout: float = 10.0,
        retries: int = 0,
        sleep: Sleep = asyncio.sleep,
        credentials: Credentials | None = None,
    ) -> AsyncAdmin:
        """An admin client of its own, for tools that need no KV client. ``endpoints`` serve calls
        made with ``address=None``; without them every call names its node. By default each call is
        one RPC (``retries=0``): the tools that drive a cluster decide themselves when to try again.
        ``credentials``: TLS and token (see :class:`Credentials`). Close it (or use ``async with``) to
        close its channels."""
        pool = ChannelPool(credentials=credentials)
        policy = RetryPolicy(attempts=retries + 1)
        caller = Caller(
            pool, policy, timeout=timeout, attempt_timeout=None, sleep=sleep, observe=lambda _: None
        )
        addresses = parse_endpoints(endpoints) if endpoints else ()
        return cls(caller, Endpoints(addresses, unreachable_for=0.0) if addresses else None, owned=pool)

    async def close(self) -> None:
        if self._owned is not None:
            await self._owned.close()

    async def __aenter__(self) -> AsyncAdmin:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _configured(self, what: str) -> Endpoints:
        if self._endpoints is None:
            raise ValueError(f"{what} needs an address: this admin client has no endpoints")
        return self._endpoints

    async def _call(
        self, method: rpc.Rpc[Req, Resp], request: Req, address: str | None, timeout: float | None
    ) -> Resp:
        targets = [address] if address else self._configured(method.name).order()
        return await self._caller.call(method, request, targets, timeout=timeout)

    async def health(self, address: str, *, service: str = "", timeout: float | None = None) -> bool:
        """Whether the node reports SERVING for ``service`` ("" is the node as a whole: NOT_SERVING
        while it rebuilds or shuts down)."""
        reply = await self._call(rpc.HEALTH, health_pb2.HealthCheckRequest(service=service), address, timeout)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def status(
        self, address: str | None = None, *, timeout: float | None = None
    ) -> admin_pb2.StatusResponse:
        return await self._call(rpc.STATUS, admin_pb2.StatusRequest(), address, timeout)

    async def status_all(
        self, addresses: Iterable[str] | None = None, *, timeout: float | None = None
    ) -> list[EndpointStatus]:
        """Every configured endpoint's status, asked at once; a node that fails is reported, not
        raised, so that one down node does not hide the others."""
        targets = list(addresses) if addresses is not None else self._configured("status_all").addresses

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

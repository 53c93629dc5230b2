"""The node's gRPC servers: its services, health checking and reflection on the client port, and,
with ``--peer-listen``, the Replica service on a peer port of its own.

Each port has its TLS credentials (or none: plaintext) and its :class:`~kvnode.server.auth.Authorizer`,
which guards every handler but health's and reflection's."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kvnode.api.v1 import admin_pb2, admin_pb2_grpc, kv_pb2, kv_pb2_grpc, replica_pb2, replica_pb2_grpc
from kvnode.config import Limits
from kvnode.core.errors import StartupError
from kvnode.core.names import parse_host_port
from kvnode.server.auth import Authorizer
from kvnode.server.rpc import lenient, reads_its_request

SERVICES = (
    kv_pb2.DESCRIPTOR.services_by_name["KV"],
    replica_pb2.DESCRIPTOR.services_by_name["Replica"],
    admin_pb2.DESCRIPTOR.services_by_name["Admin"],
)
SERVICE_NAMES = tuple(service.full_name for service in SERVICES)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


PENDING_PER_REQUEST = 16


def server_options(limits: Limits, max_requests: int) -> list[tuple[str, Any]]:
    """``max_requests`` also sizes gRPC's own queue of calls not yet handed to the node, which by
    default sheds a burst of a few thousand calls with CANCELLED before the node sees them: the
    queue must hold the bursts that the node's own cap then answers with RESOURCE_EXHAUSTED."""
    size = max(limits.grpc_message_bytes, 64 * 1024 * 1024)
    pending = max(PENDING_PER_REQUEST * max_requests, 16_384)
    return [
        ("grpc.server.max_pending_requests", pending),
        ("grpc.server.max_pending_requests_hard_limit", pending),
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.so_reuseport", 0),
        # A stream's window stays small until its handler asks for the message (see
        # kvnode.server.admission); probing the bandwidth-delay product would widen it at once.
        ("grpc.http2.bdp_probe", 0),
    ]


def register(
    server: grpc.aio.Server, servicer: object, service: ServiceDescriptor, guard: Authorizer
) -> None:
    """Serve ``service``'s methods from ``servicer``, as the generated ``add_*Servicer_to_server``
    would, except that a request that does not parse reaches its handler as a
    :class:`~kvnode.server.rpc.Malformed`, to be refused with INVALID_ARGUMENT (gRPC itself would
    answer UNKNOWN and log a traceback for each one). A handler that reads its request itself
    (:func:`~kvnode.server.rpc.reads_its_request`) is served as a stream of requests, which on the
    wire is the same as one request: gRPC takes a message in only when the handler asks for it.
    ``guard`` checks each caller first."""
    handlers = {}
    for method in service.methods:
        fn = guard.guard(getattr(servicer, method.name), service.name, method.name)
        kind = (
            grpc.stream_unary_rpc_method_handler
            if reads_its_request(fn)
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = kind(
            fn,
            request_deserializer=lenient(GetMessageClass(method.input_type).FromString),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Port:
    """One listening port: where (``what`` names its flag in messages), its TLS credentials (None:
    plaintext), and who may call what on it."""

    listen: str
    what: str
    credentials: grpc.ServerCredentials | None
    guard: Authorizer


async def _open(
    port: Port,
    limits: Limits,
    max_requests: int,
    services: list[tuple[object, ServiceDescriptor]],
    reflect: bool,
) -> tuple[grpc.aio.Server, Any, int]:
    parse_host_port(port.listen, what=port.what)
    server = grpc.aio.server(options=server_options(limits, max_requests))
    for servicer, service in services:
        register(server, servicer, service, port.guard)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # stubs lack .aio
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflect:
        names = (
            *(service.full_name for _, service in services),
            reflection.SERVICE_NAME,
            health.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
    try:
        if port.credentials is None:
            number = server.add_insecure_port(port.listen)
        else:
            number = server.add_secure_port(port.listen, port.credentials)
    except RuntimeError:
        number = 0
    if not number:
        raise StartupError(
            f"cannot listen on {port.listen} ({port.what}): the address is in use or not local"
        )
    await server.start()
    return server, health_servicer, number


class Server:
    """The started gRPC servers. Health: every service SERVING once it listens; the node as a whole
    ("") can say NOT_SERVING on its own (while it rebuilds), and everything does while it stops.
    ``port`` is the client port's number, ``peer_port`` the peer port's (None without one)."""

    def __init__(self, servers: list[tuple[grpc.aio.Server, Any]], port: int, peer_port: int | None) -> None:
        self._servers = servers
        self.port = port
        self.peer_port = peer_port

    @classmethod
    async def start(
        cls,
        client: Port,
        limits: Limits,
        max_requests: int,
        *,
        kv: kv_pb2_grpc.KVServicer,
        replica: replica_pb2_grpc.ReplicaServicer,
        admin: admin_pb2_grpc.AdminServicer,
        peer: Port | None = None,
        reflect: bool = True,
    ) -> Server:
        """Serve KV, Replica and Admin on the ``client`` port, and with a ``peer`` port Replica and
        Admin (for peers' GetMembership) there too. The client port's guard decides whether
        Replica is still served there (only while the membership has no peer port for this node)."""
        kv_service, replica_service, admin_service = SERVICES
        on_client = [(kv, kv_service), (replica, replica_service), (admin, admin_service)]
        servers: list[tuple[grpc.aio.Server, Any]] = []
        try:
            server, health_servicer, port = await _open(client, limits, max_requests, on_client, reflect)
            servers.append((server, health_servicer))
            peer_port = None
            if peer is not None:
                on_peer = [(replica, replica_service), (admin, admin_service)]
                server, health_servicer, peer_port = await _open(peer, limits, max_requests, on_peer, False)
                servers.append((server, health_servicer))
        except BaseException:
            for server, _ in servers:
                await server.stop(None)
            raise
        started = cls(servers, port, peer_port)
        await started._set_all(SERVING)
        return started

    async def set_node_serving(self, serving: bool) -> None:
        for _, health_servicer in self._servers:
            await health_servicer.set("", SERVING if serving else NOT_SERVING)

    async def _set_all(self, status: int) -> None:
        for _, health_servicer in self._servers:
            for name in ("", *SERVICE_NAMES):
                await health_servicer.set(name, status)

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING everywhere, then finish in-flight calls for up to ``grace`` seconds."""
        await self._set_all(NOT_SERVING)
        await asyncio.gather(*(server.stop(grace) for server, _ in self._servers))

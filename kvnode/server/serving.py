"""The node's gRPC server: its services, health checking and reflection, on one port."""

from __future__ import annotations

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


def register(server: grpc.aio.Server, servicer: object, service: ServiceDescriptor) -> None:
    """Serve ``service``'s methods from ``servicer``, as the generated ``add_*Servicer_to_server``
    would, except that a request that does not parse reaches its handler as a
    :class:`~kvnode.server.rpc.Malformed`, to be refused with INVALID_ARGUMENT (gRPC itself would
    answer UNKNOWN and log a traceback for each one). A handler that reads its request itself
    (:func:`~kvnode.server.rpc.reads_its_request`) is served as a stream of requests, which on the
    wire is the same as one request: gRPC takes a message in only when the handler asks for it."""
    handlers = {}
    for method in service.methods:
        fn = getattr(servicer, method.name)
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


class Server:
    """A started gRPC server. Health: every service SERVING once it listens; the node as a whole
    ("") can say NOT_SERVING on its own (while it rebuilds), and everything does while it stops."""

    def __init__(self, server: grpc.aio.Server, health_servicer: Any, port: int) -> None:
        self._server = server
        self._health = health_servicer
        self.port = port

    @classmethod
    async def start(
        cls,
        listen: str,
        limits: Limits,
        max_requests: int,
        *,
        kv: kv_pb2_grpc.KVServicer,
        replica: replica_pb2_grpc.ReplicaServicer,
        admin: admin_pb2_grpc.AdminServicer,
    ) -> Server:
        parse_host_port(listen, what="--listen")
        server = grpc.aio.server(options=server_options(limits, max_requests))
        for servicer, service in zip((kv, replica, admin), SERVICES, strict=True):
            register(server, servicer, service)
        health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # stubs lack .aio
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME), server
        )
        try:
            port = server.add_insecure_port(listen)
        except RuntimeError:
            port = 0
        if not port:
            raise StartupError(f"cannot listen on {listen}: the address is in use or not local")
        await server.start()
        started = cls(server, health_servicer, port)
        await started._set_all(SERVING)
        return started

    async def set_node_serving(self, serving: bool) -> None:
        await self._health.set("", SERVING if serving else NOT_SERVING)

    async def _set_all(self, status: int) -> None:
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING everywhere, then finish in-flight calls for up to ``grace`` seconds."""
        await self._set_all(NOT_SERVING)
        await self._server.stop(grace)

"""The node's gRPC server: its services, health checking and reflection, on one port."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kvnode.api.v1 import admin_pb2, admin_pb2_grpc, kv_pb2, kv_pb2_grpc, replica_pb2, replica_pb2_grpc
from kvnode.config import Limits
from kvnode.core.errors import StartupError
from kvnode.core.names import parse_host_port

SERVICE_NAMES = (
    kv_pb2.DESCRIPTOR.services_by_name["KV"].full_name,
    replica_pb2.DESCRIPTOR.services_by_name["Replica"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_options(limits: Limits) -> list[tuple[str, Any]]:
    size = max(limits.grpc_message_bytes, 64 * 1024 * 1024)
    return [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.so_reuseport", 0),
    ]


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
        *,
        kv: kv_pb2_grpc.KVServicer,
        replica: replica_pb2_grpc.ReplicaServicer,
        admin: admin_pb2_grpc.AdminServicer,
    ) -> Server:
        parse_host_port(listen, what="--listen")
        server = grpc.aio.server(options=server_options(limits))
        kv_pb2_grpc.add_KVServicer_to_server(kv, server)
        replica_pb2_grpc.add_ReplicaServicer_to_server(replica, server)
        admin_pb2_grpc.add_AdminServicer_to_server(admin, server)
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

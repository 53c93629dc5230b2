"""One gRPC channel per address, created on first use and shared by every call after it.

A channel is a connection (with its HTTP/2 multiplexing and reconnects), so making one per call
would pay a TCP and HTTP/2 handshake each time; one per address lets thousands of concurrent calls
share a few connections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from kvnode.api.v1 import admin_pb2_grpc, kv_pb2_grpc
from kvnode.client.credentials import Credentials
from kvnode.client.types import ClientClosed

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # Scan pages and batch reads can be large; the server enforces the real limits.
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    # Notice a dead or frozen node on an idle connection.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # gRPC's default reconnect backoff grows to 2 minutes; a restarted node should be used again
    # within seconds.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


@dataclass(frozen=True)
class Stubs:
    channel: grpc.aio.Channel
    kv: kv_pb2_grpc.KVAsyncStub
    admin: admin_pb2_grpc.AdminAsyncStub
    health: health_pb2_grpc.HealthStub


class ChannelPool:
    """Channels by address. Must be used from one event loop: grpc.aio channels belong to the loop
    that created them."""

    def __init__(
        self, options: list[tuple[str, Any]] | None = None, credentials: Credentials | None = None
    ) -> None:
        self._options = CHANNEL_OPTIONS if options is None else options
        self.credentials = credentials or Credentials()
        self._stubs: dict[str, Stubs] = {}
        self._closed = False

    def stubs(self, address: str) -> Stubs:
        stubs = self._stubs.get(address)
        if stubs is None:
            if self._closed:
                raise ClientClosed()
            channel = self.credentials.channel(address, self._options)
            stubs = self._stubs[address] = Stubs(
                channel,
                kv_pb2_grpc.KVStub(channel),
                admin_pb2_grpc.AdminStub(channel),
                health_pb2_grpc.HealthStub(channel),
            )
        return stubs

    def ready(self, address: str) -> bool:
        """Whether ``address`` has a live connection now. Asking also starts a connection in the
        background, so that an address that can be reached soon is."""
        state = self.stubs(address).channel.get_state(try_to_connect=True)
        return state == grpc.ChannelConnectivity.READY

    async def close(self) -> None:
        self._closed = True
        stubs, self._stubs = list(self._stubs.values()), {}
        for s in stubs:
            await s.channel.close(None)

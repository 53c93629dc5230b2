"""After the faults: drain, run anti-entropy, and collect what the convergence check compares.

Only node endpoints are needed (the Admin service), so the kind suite can call these through
``kubectl port-forward`` just as the local suite calls them on loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc

from e2e.chaos.channels import open_channel
from e2e.chaos.checker import Digests
from kvnode.api.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from kvnode.core.membership import Membership
from kvnode.core.placement import Placement


async def _admin(endpoint: str) -> tuple[grpc.aio.Channel, admin_pb2_grpc.AdminAsyncStub]:
    channel = open_channel(endpoint)
    return channel, admin_pb2_grpc.AdminStub(channel)


async def status(endpoint: str, timeout: float = 5.0) -> admin_pb2.StatusResponse:
    channel, stub = await _admin(endpoint)
    async with channel:
        reply: admin_pb2.StatusResponse = await stub.Status(admin_pb2.StatusRequest(), timeout=timeout)
        return reply


async def wait_hints_drained(endpoints: Sequence[str], timeout: float = 30.0) -> None:
    """Until no node holds a hint (hints replay every second once the target is back)."""
    deadline = time.monotonic() + timeout
    pending: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            replies = await asyncio.gather(*(status(e) for e in endpoints))
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.2)
            continue
        pending = {r.node_id: r.hints_pending for r in replies if r.hints_pending}
        if not pending:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"hints still pending after {timeout:.0f}s: {pending}")


async def unreachable_peers(endpoints: Sequence[str], timeout: float = 5.0) -> dict[str, list[str]]:
    """Each node's peers that it holds unreachable (its peer links' own view), or the endpoint
    itself, mapped to why, when it does not answer."""
    replies = await asyncio.gather(*(status(e, timeout) for e in endpoints), return_exceptions=True)
    out: dict[str, list[str]] = {}
    for endpoint, reply in zip(endpoints, replies, strict=True):
        if isinstance(reply, BaseException):
            out[endpoint] = [f"no status: {reply!r}"[:200]]
        elif down := [p.id for p in reply.peers if not p.reachable]:
            out[reply.node_id] = down
    return out


async def wait_healed(endpoints: Sequence[str], timeout: float = 60.0) -> None:
    """Until every node answers and holds every peer reachable. A node notices that a peer is
    back only when a call to it succeeds (a node asks its unreachable peers once a second), so a
    healed partition or a restarted node takes a moment to count; an ALL read before then can
    fail, and after it, it can only fail if a replica does not answer in time."""
    deadline = time.monotonic() + timeout
    pending: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        pending = await unreachable_peers(endpoints)
        if not pending:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"after {timeout:.0f}s, nodes still hold peers unreachable: {pending}")


async def run_anti_entropy(endpoints: Sequence[str]) -> list[admin_pb2.RunAntiEntropyResponse]:
    """One anti-entropy round on every node, one node after the other."""
    out = []
    for endpoint in endpoints:
        channel, stub = await _admin(endpoint)
        async with channel:
            reply: admin_pb2.RunAntiEntropyResponse = await stub.RunAntiEntropy(
                admin_pb2.RunAntiEntropyRequest(), timeout=120
            )
            out.append(reply)
    return out


async def membership(endpoint: str) -> Membership:
    channel, stub = await _admin(endpoint)
    async with channel:
        reply: types_pb2.Membership = await stub.GetMembership(admin_pb2.GetMembershipRequest(), timeout=10)
    return Membership.from_proto(reply)


async def collect_digests(endpoints: Sequence[str]) -> tuple[Digests, Placement]:
    """Every node's digest of every partition (empty ones included), and the placement to compare
    them by."""
    placement = Placement(await membership(endpoints[0]))
    wanted = list(range(placement.partitions))
    digests: dict[str, dict[int, tuple[bytes, int]]] = {}
    for endpoint in endpoints:
        channel, stub = await _admin(endpoint)
        async with channel:
            reply: admin_pb2.PartitionDigestsResponse = await stub.PartitionDigests(
                admin_pb2.PartitionDigestsRequest(partitions=wanted), timeout=30
            )
        digests[reply.node_id] = {d.partition: (d.digest, d.records) for d in reply.digests}
    return digests, placement

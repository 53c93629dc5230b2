"""Failover across endpoints when a node dies, and the errors that must still come through."""

from __future__ import annotations

import pytest

from kvnode.client import AsyncKVClient, Attempt, Unavailable
from tests.conftest import ClusterFactory


async def _put_and_get(kv: AsyncKVClient, tag: str, count: int) -> None:
    for i in range(count):
        await kv.put(f"{tag}{i}", f"{i}")
        entry = await kv.get(f"{tag}{i}")
        assert entry is not None and entry.value == f"{i}".encode()


async def test_keeps_working_when_the_first_endpoint_is_killed(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(size=3)
    dead = cluster.endpoints[0]
    attempts: list[Attempt] = []
    async with AsyncKVClient(cluster.endpoints, on_attempt=attempts.append) as routed:
        await _put_and_get(routed, "before", 10)
        cluster.kill(0)
        attempts.clear()

        # Without routing: calls go round-robin over the endpoints, so some reach the dead one
        # and move on to the next; then it is remembered as unreachable and asked last.
        async with AsyncKVClient(cluster.endpoints, route=False, on_attempt=attempts.append) as kv:
            await _put_and_get(kv, "after", 40)
            failed = [a for a in attempts if a.error is not None]
            assert failed, "no call ever went to the dead node"
            assert all(a.address == dead and a.unreachable for a in failed)
            assert len(failed) <= 2

            # ALL needs every replica: a typed Unavailable, after retries (reads always retry).
            attempts.clear()
            with pytest.raises(Unavailable, match="ALL"):
                await kv.get("before1", consistency="ALL")
            assert len([a for a in attempts if a.method == "Get"]) == kv.retry_policy.attempts
            with pytest.raises(Unavailable, match="ALL write"):
                await kv.put("x", "y", consistency="ALL")

        # With routing: a replica whose connection is gone is not routed to at all.
        attempts.clear()
        await _put_and_get(routed, "routed", 40)
        for i in range(10):
            entry = await routed.get(f"before{i}")
            assert entry is not None and entry.value == f"{i}".encode()
        assert len([a for a in attempts if a.error is not None]) <= 2

    # With write retries off, a write the node refused is sent once.
    attempts.clear()
    async with AsyncKVClient(cluster.endpoints[1:], retry_writes=False, on_attempt=attempts.append) as kv:
        with pytest.raises(Unavailable):
            await kv.put("x", "y", consistency="ALL")
        assert len([a for a in attempts if a.method == "Put"]) == 1
        await kv.put("x", "y")

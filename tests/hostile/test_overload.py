"""Many thousands of requests at once from one client."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvnode.client import AsyncKVClient
from kvnode.testing.processes import ProcessCluster
from tests.hostile.conftest import metric, running


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[ProcessCluster]:
    """A node that takes at most 8 client requests at a time, so that a burst goes past it."""
    with running(
        tmp_path, 1, replication_factor=1, metrics=True, extra_args=["--max-requests", "8"]
    ) as cluster:
        yield cluster


async def test_a_burst_past_the_cap_gets_every_answer(capped: ProcessCluster) -> None:
    """Before: 2000 Gets at once from one client, 185 came back CANCELLED (gRPC's own queue of calls
    not yet handed to the node shed them). Now the node refuses what is past its cap with
    RESOURCE_EXHAUSTED and the client sends those again after a pause: every call gets its answer.
    Puts wait for their commit, so 5000 of them at once are far past a cap of 8 in progress.
    Coalesced, the burst would ride a few batch RPCs and never reach the cap: it is off here."""
    async with AsyncKVClient(capped.endpoints, timeout=120, coalesce=False) as kv:
        puts = await asyncio.gather(
            *(kv.put(f"burst/{i}", b"v") for i in range(5000)), return_exceptions=True
        )
        gets = await asyncio.gather(*(kv.get(f"burst/{i}") for i in range(5000)), return_exceptions=True)
    assert collections.Counter(type(r).__name__ for r in puts) == {"WriteResult": 5000}
    assert collections.Counter(type(r).__name__ for r in gets) == {"Entry": 5000}
    assert metric(capped, 0, "kvnode_requests_total", method="Put", code="RESOURCE_EXHAUSTED") > 0

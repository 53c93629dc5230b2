"""Client test fixtures: a cluster of one node and one of three, and clients for them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kvnode.client import AsyncKVClient
from kvnode.testing.processes import ProcessCluster


@pytest.fixture(params=["shared_cluster1", "shared_cluster3"], ids=["1-node", "3-node"])
def cluster(request: pytest.FixtureRequest) -> ProcessCluster:
    """Each test that uses it runs on a single node and on three nodes (RF=3)."""
    shared: ProcessCluster = request.getfixturevalue(request.param)
    return shared


@pytest.fixture
async def kv(cluster: ProcessCluster) -> AsyncIterator[AsyncKVClient]:
    async with AsyncKVClient(cluster.endpoints, timeout=10.0) as client:
        yield client

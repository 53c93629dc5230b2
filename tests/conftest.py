"""Fixtures for tests that need real kvnode processes.

``shared_cluster1`` and ``shared_cluster3`` are started once per session and shared by every test
that asks for them: such tests must leave the nodes running (no kill, pause or membership change)
and keep to their own keys (the ``keyspace`` fixture gives each test a prefix of its own). Tests
that inject faults start their own cluster with ``cluster_factory``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnode.testing.processes import ProcessCluster

ClusterFactory = Callable[..., ProcessCluster]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak tests run only when asked for by marker (``pytest -m soak``). Not an ``addopts`` marker
    expression: any ``-m`` on the command line (``-m 'not kind'``) would replace it and turn the
    soaks on."""
    if "soak" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="a long soak: run it with pytest -m soak")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


@contextlib.contextmanager
def _running(root: Path, **kwargs: Any) -> Iterator[ProcessCluster]:
    """A started cluster (64 partitions unless told otherwise), stopped on the way out."""
    with ProcessCluster(root, **{"partitions": 64, **kwargs}) as cluster:
        cluster.start()
        yield cluster


@pytest.fixture(scope="session")
def shared_cluster1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with _running(tmp_path_factory.mktemp("shared1"), size=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def shared_cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with _running(tmp_path_factory.mktemp("shared3"), size=3) as cluster:
        yield cluster


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[ClusterFactory]:
    """Start a private cluster: ``cluster_factory(size=3, replication_factor=1, metrics=True)``.
    Every cluster it started is stopped when the test ends."""
    with contextlib.ExitStack() as stack:
        count = itertools.count()

        def start(**kwargs: Any) -> ProcessCluster:
            return stack.enter_context(_running(tmp_path / f"cluster{next(count)}", **kwargs))

        yield start


@pytest.fixture
def keyspace(request: pytest.FixtureRequest) -> str:
    """A key prefix no other test uses, so tests can share a cluster."""
    return "t/" + hashlib.blake2b(request.node.nodeid.encode(), digest_size=6).hexdigest() + "/"

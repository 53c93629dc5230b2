"""The hostile-client suite: requests that a careless or hostile client (or peer) sends, against
real node processes.

Every probe states what the node must answer, and runs beside :class:`GoodTraffic`, a well-behaved
client whose every request must succeed and whose every acknowledged write must stay readable: a
refused or malformed request changes nothing for any other request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from kvnode.api.v1 import replica_pb2, replica_pb2_grpc
from kvnode.client import AsyncKVClient, Level
from kvnode.testing import processes
from kvnode.testing.processes import ProcessCluster

PARTITIONS = 64


@contextlib.contextmanager
def running(root: Path, size: int, **kwargs: object) -> Iterator[ProcessCluster]:
    with ProcessCluster(root, size, partitions=PARTITIONS, **kwargs) as cluster:  # type: ignore[arg-type]
        cluster.start()
        yield cluster


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    """One node, shared by a module's probes (each probe must leave it serving)."""
    with running(tmp_path_factory.mktemp("hostile1"), 1, replication_factor=1, metrics=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    """Three nodes, RF 3, shared by a module's probes."""
    with running(tmp_path_factory.mktemp("hostile3"), 3, metrics=True) as cluster:
        yield cluster


@dataclass
class GoodTraffic:
    """A well-behaved client writing and reading its own keys while a probe runs."""

    endpoints: Sequence[str]
    prefix: str
    acked: dict[str, bytes] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    requests: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with AsyncKVClient(list(self.endpoints), timeout=20) as kv:
            for n in itertools.count():
                if stop.is_set():
                    return
                key, value = f"{self.prefix}{n % 50}", os.urandom(32)
                try:
                    await kv.put(key, value, consistency=Level.QUORUM)
                    self.acked[key] = value
                    entry = await kv.get(key, consistency=Level.QUORUM)
                    if entry is None or entry.value != value:
                        self.errors.append(f"read back {key}: {entry}")
                except Exception as exc:  # noqa: BLE001 - every failure is the finding
                    self.errors.append(f"{key}: {type(exc).__name__}: {exc}")
                self.requests += 2

    async def check_readable(self) -> None:
        """Every acknowledged write is still there, read at ALL."""
        async with AsyncKVClient(list(self.endpoints), timeout=20) as kv:
            for key, value in self.acked.items():
                entry = await kv.get(key, consistency=Level.ALL)
                assert entry is not None and entry.value == value, f"acknowledged {key} lost: {entry}"


@contextlib.asynccontextmanager
async def good_traffic(cluster: ProcessCluster, prefix: str) -> AsyncIterator[GoodTraffic]:
    """Run :class:`GoodTraffic` around the block; on the way out, assert it saw no error, made
    progress, and that its acknowledged writes are all readable, and that every node still runs."""
    traffic = GoodTraffic(cluster.endpoints, prefix)
    stop = asyncio.Event()
    task = asyncio.create_task(traffic.run(stop))
    try:
        yield traffic
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    assert traffic.errors == [], traffic.errors[:5]
    assert traffic.requests > 0
    await traffic.check_readable()
    assert all(node.running for node in cluster.nodes), [n.log_tail() for n in cluster.nodes if not n.running]


async def call_status(call: object) -> grpc.StatusCode:
    """The status an awaited gRPC call ends with (OK when it succeeds)."""
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@contextlib.asynccontextmanager
async def replica_stub(address: str) -> AsyncIterator[replica_pb2_grpc.ReplicaAsyncStub]:
    """The Replica service as a hostile peer would call it."""
    async with grpc.aio.insecure_channel(address) as channel:
        yield replica_pb2_grpc.ReplicaStub(channel)


def header(
    hlc: int, *, sender: str = "intruder", epoch: int = 0, repair: bool = True
) -> replica_pb2.RequestHeader:
    return replica_pb2.RequestHeader(sender=sender, hlc=hlc, epoch=epoch, repair=repair)


def metric(cluster: ProcessCluster, index: int, name: str, **labels: str) -> float:
    """The sum of a metric's samples on one node, over those with ``labels``."""
    return processes.metric(cluster[index], name, **labels)

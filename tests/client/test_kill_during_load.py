"""The client keeps serving while a node is SIGKILLed and restarted: no error escapes at QUORUM,
and every acknowledged put can be read back afterwards."""

from __future__ import annotations

import asyncio
import time

from kvnode.client import AsyncKVClient, KVError
from kvnode.testing.processes import ProcessCluster
from tests.conftest import ClusterFactory

WORKERS = 8


class Load:
    """Workers that each put a fresh key, then read it back, until told to stop."""

    def __init__(self, kv: AsyncKVClient) -> None:
        self.kv = kv
        self.acked: dict[str, bytes] = {}
        self.errors: list[str] = []
        self.stale: list[str] = []
        self.stop = asyncio.Event()

    async def worker(self, w: int) -> None:
        n = 0
        while not self.stop.is_set():
            key, value = f"w{w}/{n}", f"{w}:{n}:{time.monotonic()}".encode()
            n += 1
            try:
                await self.kv.put(key, value, consistency="QUORUM")
                self.acked[key] = value
                entry = await self.kv.get(key, consistency="QUORUM")
            except KVError as exc:
                self.errors.append(f"{key}: {type(exc).__name__}: {exc}")
                continue
            if entry is None or entry.value != value:
                self.stale.append(key)

    async def until(self, ops: int) -> None:
        """Wait until ``ops`` more puts were acknowledged."""
        target = len(self.acked) + ops
        deadline = time.monotonic() + 15
        while len(self.acked) < target:
            assert time.monotonic() < deadline, f"load stalled at {len(self.acked)} acknowledged puts"
            assert not self.errors, self.errors[:3]
            await asyncio.sleep(0.02)


async def test_no_error_escapes_while_a_node_is_killed_and_restarted(
    cluster_factory: ClusterFactory,
) -> None:
    cluster: ProcessCluster = cluster_factory(size=3)
    async with AsyncKVClient(cluster.endpoints, timeout=10.0) as kv:
        load = Load(kv)
        workers = [asyncio.create_task(load.worker(w)) for w in range(WORKERS)]
        try:
            await load.until(300)
            await asyncio.to_thread(cluster.kill, 0)  # the first endpoint
            await load.until(400)
            await asyncio.to_thread(cluster.start, 0)
            await load.until(300)
        finally:
            load.stop.set()
            await asyncio.gather(*workers)
        assert not load.errors, load.errors[:5]
        assert not load.stale, load.stale[:5]

        keys = list(load.acked)
        found = []
        for i in range(0, len(keys), 500):
            found += await kv.batch_get(keys[i : i + 500], consistency="QUORUM")
        lost = [k for k, e in zip(keys, found, strict=True) if e is None or e.value != load.acked[k]]
        assert not lost, f"{len(lost)} of {len(keys)} acknowledged puts lost, e.g. {lost[:5]}"

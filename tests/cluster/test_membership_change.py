"""Growing and shrinking a cluster under live writes loses no acknowledged write."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc, types_pb2
from kvnode.client.reconfig import Reconfigurer
from kvnode.core.errors import FailedPrecondition
from kvnode.core.membership import MemberState
from kvnode.core.placement import Placement
from kvnode.testing.convergence import divergent_partitions, membership_of
from kvnode.testing.processes import ProcessCluster


class Writer:
    """Writes unique keys through the given endpoints until stopped; remembers what was acked."""

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self.acked: list[bytes] = []
        self.failed = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        channels = [grpc.aio.insecure_channel(a) for a in self.endpoints]
        stubs = [kv_pb2_grpc.KVStub(c) for c in channels]
        i = 0
        try:
            while not self._stop.is_set():
                calls = []
                for _ in range(8):
                    key = b"live-%06d" % i
                    calls.append(
                        (key, stubs[i % len(stubs)].Put(kv_pb2.PutRequest(key=key, value=key), timeout=5))
                    )
                    i += 1
                for key, call in calls:
                    try:
                        await call
                        self.acked.append(key)
                    except grpc.aio.AioRpcError:
                        self.failed += 1
        finally:
            for channel in channels:
                await channel.close(None)

    def stop(self) -> None:
        self._stop.set()


async def missing_keys(
    endpoint: str, keys: list[bytes], level: types_pb2.Consistency.ValueType
) -> list[bytes]:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        missing: list[bytes] = []
        for start in range(0, len(keys), 500):
            reply = await kv.BatchGet(
                kv_pb2.BatchGetRequest(keys=keys[start : start + 500], consistency=level)
            )
            missing += [r.key for r in reply.kvs if not r.found]
        return missing


async def test_grow_to_four_and_shrink_to_three_under_live_writes(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path, size=4, partitions=64) as cluster:
        original = [cluster[i] for i in range(3)]
        original_peers = ",".join(f"{n.node_id}={n.address}" for n in original)
        cluster.start([0, 1, 2], peers=original_peers)
        seeds = [n.address for n in original]
        async with Reconfigurer.connect(seeds, timeout=10, transfer_timeout=120) as reconfig:
            await reconfig.bootstrap()
            writer = Writer([n.address for n in original])
            writing = asyncio.create_task(writer.run())
            try:
                await asyncio.sleep(1)
                cluster.start("kv-3")  # learns epoch 1 from its peers: not a member yet
                grown = await reconfig.add("kv-3", cluster["kv-3"].address)
                assert [m.id for m in grown.members] == ["kv-0", "kv-1", "kv-2", "kv-3"]
                assert all(m.state == MemberState.ACTIVE for m in grown.members)
                await asyncio.sleep(1)
                shrunk = await reconfig.remove("kv-0")
                assert [m.id for m in shrunk.members] == ["kv-1", "kv-2", "kv-3"]
                await asyncio.sleep(1)
            finally:
                writer.stop()
                await writing
        assert len(writer.acked) > 200
        cluster.kill("kv-0")  # the removed node's copy must not be needed any more
        final = membership_of(cluster["kv-1"].address)
        assert final.epoch == shrunk.epoch
        placement = Placement(final)
        assert all(len(placement.read_replicas(p)) == 3 for p in range(final.partitions))
        for node_id in ("kv-1", "kv-2", "kv-3"):
            cluster.anti_entropy(node_id)
        assert not divergent_partitions(cluster)
        assert await missing_keys(cluster["kv-1"].address, writer.acked, types_pb2.CONSISTENCY_ALL) == []


async def test_removing_below_the_replication_factor_is_refused(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path, size=3, partitions=64) as cluster:
        cluster.start()
        async with Reconfigurer.connect(cluster.endpoints) as reconfig:
            with pytest.raises(FailedPrecondition, match="fewer than the replication factor 3"):
                await reconfig.remove("kv-2")
            assert (await reconfig.current()).epoch == 0


async def test_a_stale_membership_epoch_is_rejected(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path, size=3, partitions=64) as cluster:
        cluster.start()
        async with Reconfigurer.connect(cluster.endpoints) as reconfig:
            current = await reconfig.bootstrap()
            newer = await reconfig.bootstrap()
            assert newer.epoch == current.epoch == 1
            stale = replace(current, epoch=0)
            with pytest.raises(FailedPrecondition, match="stale membership epoch 0"):
                await reconfig.install(stale)

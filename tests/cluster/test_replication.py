"""Replication across real node processes: every claim is checked on the replicas themselves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path

import grpc
import pytest

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc, types_pb2
from kvnode.core.records import Record
from kvnode.storage.engine import Storage
from kvnode.testing.convergence import divergent_partitions
from kvnode.testing.processes import ProcessCluster, wait_for, wait_until

ONE, QUORUM, ALL = types_pb2.CONSISTENCY_ONE, types_pb2.CONSISTENCY_QUORUM, types_pb2.CONSISTENCY_ALL


def stub(address: str) -> tuple[grpc.aio.Channel, kv_pb2_grpc.KVAsyncStub]:
    channel = grpc.aio.insecure_channel(address)
    return channel, kv_pb2_grpc.KVStub(channel)


async def read_local(address: str, key: bytes) -> bytes | None:
    """A read at ONE answered by the node itself: it is a replica of every key when RF = size."""
    channel, kv = stub(address)
    async with channel:
        reply = await kv.Get(kv_pb2.GetRequest(key=key, consistency=ONE), timeout=10)
    return reply.kv.value if reply.kv.found else None


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_a_write_reaches_every_replicas_own_store(cluster: ProcessCluster) -> None:
    channel, kv = stub(cluster[0].address)
    async with channel:
        await kv.Put(kv_pb2.PutRequest(key=b"replicated", value=b"everywhere"))
    for node in cluster.nodes:
        await wait_until(
            lambda n=node: _equals(read_local(n.address, b"replicated"), b"everywhere"),
            10,
            f"{node.node_id} to hold it",
        )
    for node in cluster.nodes:
        cluster.terminate(node.node_id)
        store = Storage(node.data_dir / "lmdb", partitions=64, map_size=1 << 20)
        try:
            record = store.get(b"replicated")
        finally:
            store.close()
        assert isinstance(record, Record) and record.value == b"everywhere", node.node_id


async def test_quorum_survives_one_node_down_and_all_does_not(cluster: ProcessCluster) -> None:
    cluster.kill(2)
    channel, kv = stub(cluster[0].address)
    async with channel:
        for i in range(20):
            await kv.Put(kv_pb2.PutRequest(key=b"q%d" % i, value=b"v", consistency=QUORUM), timeout=10)
            got = await kv.Get(kv_pb2.GetRequest(key=b"q%d" % i, consistency=QUORUM), timeout=10)
            assert got.kv.value == b"v"
        with pytest.raises(grpc.aio.AioRpcError) as write:
            await kv.Put(kv_pb2.PutRequest(key=b"all", value=b"v", consistency=ALL), timeout=10)
        assert write.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "ALL write: 2 of 3 replicas acknowledged, 3 needed" in (write.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as read:
            await kv.Get(kv_pb2.GetRequest(key=b"q0", consistency=ALL), timeout=10)
        assert read.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "ALL read: 2 of 3 replicas answered, 3 needed" in (read.value.details() or "")


async def write_for(
    seconds: float, addresses: list[str], prefix: str, events: dict[float, object]
) -> list[bytes]:
    """Write unique keys through the given nodes for ``seconds``; run ``events`` (callables) at
    their offsets. Returns the acknowledged keys."""
    acked: list[bytes] = []
    start = time.monotonic()
    pending = sorted(events.items())
    channels = [stub(a) for a in addresses]
    i = 0
    try:
        while (elapsed := time.monotonic() - start) < seconds:
            while pending and pending[0][0] <= elapsed:
                await asyncio.to_thread(pending.pop(0)[1])  # type: ignore[arg-type]
            batch = []
            for _ in range(16):
                key = f"{prefix}{i:06}".encode()
                _, kv = channels[i % len(channels)]
                batch.append((key, kv.Put(kv_pb2.PutRequest(key=key, value=key), timeout=5)))
                i += 1
            for key, call in batch:
                try:
                    await call
                    acked.append(key)
                except grpc.aio.AioRpcError:
                    pass
        for _, action in pending:
            await asyncio.to_thread(action)  # type: ignore[arg-type]
    finally:
        for channel, _ in channels:
            await channel.close(None)
    return acked


async def assert_all_readable_everywhere(cluster: ProcessCluster, keys: list[bytes]) -> None:
    for node in cluster.nodes:
        channel, kv = stub(node.address)
        async with channel:
            for start in range(0, len(keys), 500):
                request = kv_pb2.BatchGetRequest(keys=keys[start : start + 500], consistency=ONE)
                missing = [r.key for r in (await kv.BatchGet(request)).kvs if not r.found]
                assert not missing, f"{node.node_id} lacks {len(missing)} acknowledged keys: {missing[:3]}"


async def test_a_killed_node_catches_up_through_hints(cluster: ProcessCluster) -> None:
    addresses = [cluster[0].address, cluster[1].address]
    acked = await write_for(30, addresses, "hint", {8: lambda: cluster.kill(2), 20: lambda: cluster.start(2)})
    assert len(acked) > 100

    def caught_up() -> bool:
        """Every hint replayed and the replicas equal. Together: a write its client gave up on (a
        busy machine) may still finish afterwards, and leave a hint of its own."""
        return sum(cluster.status(i).hints_pending for i in (0, 1)) == 0 and not divergent_partitions(cluster)

    wait_for(caught_up, 60, "hints to be replayed and the replicas to agree")
    await assert_all_readable_everywhere(cluster, acked)


async def test_anti_entropy_catches_up_a_node_when_every_hint_was_lost(tmp_path: Path) -> None:
    # --hint-max-bytes 0: coordinators keep no hints at all, as if every hint was lost.
    with ProcessCluster(tmp_path, size=3, partitions=64, extra_args=["--hint-max-bytes", "0"]) as cluster:
        cluster.start()
        cluster.kill(2)
        acked = await write_for(5, [cluster[0].address, cluster[1].address], "ae", {})
        cluster.start(2)
        assert sum(cluster.status(i).hints_pending for i in range(3)) == 0
        assert divergent_partitions(cluster), "the restarted node should be behind before anti-entropy"
        repaired = cluster.anti_entropy(2)
        assert repaired.records_pulled >= len(acked) * 0.9

        def converged() -> bool:
            """A write that its client gave up on (a busy machine) may still land on one replica
            after the first round: the next round takes it in too."""
            if not divergent_partitions(cluster):
                return True
            cluster.anti_entropy(2)
            return False

        wait_for(converged, 60, "anti-entropy rounds to leave no partition differing")
        await assert_all_readable_everywhere(cluster, acked)


async def test_concurrent_writers_to_the_same_keys_leave_replicas_identical(cluster: ProcessCluster) -> None:
    keys = [b"contended-%d" % i for i in range(10)]
    channels = [stub(n.address) for n in cluster.nodes]

    async def writer(w: int) -> None:
        _, kv = channels[w % 3]
        for round_ in range(30):
            key = keys[(w + round_) % len(keys)]
            await kv.Put(kv_pb2.PutRequest(key=key, value=b"w%d-r%d" % (w, round_)))

    try:
        await asyncio.gather(*(writer(w) for w in range(12)))
    finally:
        for channel, _ in channels:
            await channel.close(None)
    wait_for(lambda: not divergent_partitions(cluster), 30, "replicas to agree")
    for key in keys:
        values = {await read_local(n.address, key) for n in cluster.nodes}
        assert len(values) == 1, (key, values)

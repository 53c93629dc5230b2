"""Coalescing on real nodes: concurrent single-key calls ride shared batch RPCs, and every caller
still gets its own answer, its own version and its own error."""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from kvnode.client import AsyncKVClient, Attempt, Entry, InvalidArgument, KVClient, Unavailable, WriteResult
from kvnode.core.placement import Placement
from kvnode.testing.processes import ProcessCluster
from tests.conftest import ClusterFactory

TIMEOUT = 60.0  # thousands of calls queue on two cores; each gets the time the whole burst needs
UNARY = {"Put", "Get", "Delete"}


def kv_methods(attempts: list[Attempt]) -> set[str]:
    """The KV RPCs sent (the router's membership fetches aside); never empty here."""
    methods = {a.method for a in attempts if not a.method.startswith("Admin/")}
    assert methods, "no KV call was seen"
    return methods


async def test_5000_concurrent_mixed_calls_are_each_answered_correctly_and_every_write_is_readable(
    shared_cluster3: ProcessCluster, keyspace: str
) -> None:
    rng = random.Random(14)
    seeded = {f"{keyspace}seed{i:03d}": f"seed-{i}".encode() for i in range(300)}
    async with AsyncKVClient(shared_cluster3.endpoints, timeout=TIMEOUT) as kv:
        await kv.batch_write(seeded)
        seeded_keys = list(seeded)
        calls: list[tuple[str, str, bytes]] = []  # (op, key, expected or written value)
        for i in range(5000):
            if rng.random() < 0.5:
                calls.append(("put", f"{keyspace}new{i:04d}", f"value-{i}".encode()))
            else:
                key = rng.choice(seeded_keys)
                calls.append(("get", key, seeded[key]))

        async def run(op: str, key: str, value: bytes) -> Entry | WriteResult | None:
            return await (kv.put(key, value) if op == "put" else kv.get(key))

        answers = await asyncio.gather(*(run(*c) for c in calls))
        stats = kv.coalesce_stats
        assert stats is not None and stats.calls == 5000
        assert stats.rpcs < 2500, f"5000 concurrent calls went in {stats.rpcs} RPCs: barely coalesced"

        versions = set()
        for (op, key, value), answer in zip(calls, answers, strict=True):
            if op == "put":
                assert isinstance(answer, WriteResult)
                versions.add(answer.version)
            else:
                assert isinstance(answer, Entry), f"get {key} answered {answer}"
                assert (answer.key, answer.value) == (key.encode(), value)
        assert len(versions) == sum(1 for c in calls if c[0] == "put"), "two puts got one version"

        written = {key: value for op, key, value in calls if op == "put"}
        keys = list(written)
        stored: list[Entry | None] = []
        for i in range(0, len(keys), 500):
            stored += await kv.batch_get(keys[i : i + 500], consistency="QUORUM")
    assert [e.value if e else None for e in stored] == list(written.values())


async def test_a_bad_call_fails_alone_and_its_batch_mates_succeed(
    shared_cluster3: ProcessCluster, keyspace: str
) -> None:
    attempts: list[Attempt] = []
    async with AsyncKVClient(shared_cluster3.endpoints, on_attempt=attempts.append, route=False) as kv:
        good = [f"{keyspace}{i}" for i in range(40)]
        too_long = "k" * 100_000
        results = await asyncio.gather(
            *(kv.put(k, k) for k in good[:20]),
            kv.put(too_long, "v"),
            *(kv.put(k, k) for k in good[20:]),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1 and isinstance(errors[0], InvalidArgument), errors
        assert "key" in errors[0].message
        assert all(isinstance(r, WriteResult) for i, r in enumerate(results) if i != 20)
        assert any(a.method == "BatchWrite" for a in attempts), "the puts never shared an RPC"
        for k, entry in zip(good, await kv.batch_get(good), strict=True):
            assert entry is not None and entry.value == k.encode()


async def test_linearizable_calls_one_call_at_a_time_and_coalesce_off_all_go_alone(
    shared_cluster3: ProcessCluster, keyspace: str
) -> None:
    attempts: list[Attempt] = []
    keys = [f"{keyspace}{i}" for i in range(30)]
    async with AsyncKVClient(shared_cluster3.endpoints, on_attempt=attempts.append) as kv:
        await asyncio.gather(*(kv.put(k, "x", consistency="LINEARIZABLE") for k in keys))
        await asyncio.gather(*(kv.get(k, consistency="LINEARIZABLE") for k in keys))
        for k in keys:  # one in flight: a batch of one is the plain unary call
            await kv.put(k, "y")
            await kv.get(k)
        assert kv_methods(attempts) <= UNARY
    attempts.clear()
    # Deadlines shorter than the gather window: here every call's, with a window of 10 s.
    async with AsyncKVClient(
        shared_cluster3.endpoints, on_attempt=attempts.append, coalesce_window=10.0
    ) as kv:
        await asyncio.gather(*(kv.put(k, "w", timeout=5.0) for k in keys))
    assert kv_methods(attempts) <= UNARY
    attempts.clear()
    async with AsyncKVClient(shared_cluster3.endpoints, on_attempt=attempts.append, coalesce=False) as kv:
        await asyncio.gather(*(kv.put(k, "z") for k in keys))
        entries = await asyncio.gather(*(kv.get(k) for k in keys))
        assert kv.coalesce_stats is None
    assert kv_methods(attempts) <= UNARY
    assert all(e is not None and e.value == b"z" for e in entries)


async def test_failover_resends_unsent_batches_and_writes_that_failed_on_a_node_are_not_repeated(
    cluster_factory: ClusterFactory, keyspace: str
) -> None:
    cluster = cluster_factory(size=3)
    cluster.kill(0)
    attempts: list[Attempt] = []
    # The dead node is the first endpoint: batches sent there never left, so even writes (retries
    # off) move on to a live node and succeed.
    async with AsyncKVClient(
        cluster.endpoints, route=False, retry_writes=False, on_attempt=attempts.append
    ) as kv:
        keys = [f"{keyspace}{i}" for i in range(50)]
        await asyncio.gather(*(kv.put(k, k) for k in keys))
        assert any(a.unreachable for a in attempts), "no call went to the dead node"
        entries = await asyncio.gather(*(kv.get(k) for k in keys))
        assert [e.value if e else None for e in entries] == [k.encode() for k in keys]

        # ALL needs the dead replica: the live node refuses the batch, and with retries off each
        # write RPC that reached a node is sent once; reads are idempotent and are retried.
        stats = kv.coalesce_stats
        assert stats is not None
        attempts.clear()
        before = stats.rpcs
        writes = await asyncio.gather(
            *(kv.put(k, "all", consistency="ALL") for k in keys), return_exceptions=True
        )
        assert all(isinstance(w, Unavailable) for w in writes)
        sent = [a for a in attempts if not a.unreachable]
        assert any(a.method == "BatchWrite" for a in sent)
        assert len(sent) == stats.rpcs - before, "a write the node refused was sent again"
        attempts.clear()
        before = stats.rpcs
        reads = await asyncio.gather(*(kv.get(k, consistency="ALL") for k in keys), return_exceptions=True)
        assert all(isinstance(r, Unavailable) for r in reads)
        assert len([a for a in attempts if not a.unreachable]) > stats.rpcs - before, "reads were not retried"


@pytest.mark.parametrize("level", ["ONE", "QUORUM", "ALL"])
async def test_deletes_coalesce_and_read_back_as_gone(
    shared_cluster3: ProcessCluster, keyspace: str, level: str
) -> None:
    keys = [f"{keyspace}{i}" for i in range(40)]
    async with AsyncKVClient(shared_cluster3.endpoints) as kv:
        await kv.batch_write({k: "v" for k in keys})
        results = await asyncio.gather(*(kv.delete(k, consistency=level) for k in keys))
        assert len({r.version for r in results}) == len(keys)
        assert await kv.batch_get(keys, consistency="QUORUM") == [None] * len(keys)


def test_the_blocking_client_coalesces_calls_from_many_threads(
    shared_cluster3: ProcessCluster, keyspace: str
) -> None:
    keys = [f"{keyspace}{i}" for i in range(400)]
    with KVClient(shared_cluster3.endpoints, timeout=TIMEOUT) as kv, ThreadPoolExecutor(32) as pool:
        versions = list(pool.map(lambda k: kv.put(k, k[::-1]).version, keys))
        entries = list(pool.map(kv.get, keys))
        stats = kv.coalesce_stats
    assert len(set(versions)) == len(keys)
    assert [e.value if e else None for e in entries] == [k[::-1].encode() for k in keys]
    assert stats is not None and stats.calls == 2 * len(keys) and stats.rpcs < stats.calls


async def test_keys_whose_replicas_are_down_fail_alone_and_their_batch_mates_succeed(
    cluster_factory: ClusterFactory, keyspace: str
) -> None:
    cluster = cluster_factory(size=4, replication_factor=2)
    cluster.kill(0)
    keys = [f"{keyspace}{i}" for i in range(60)]
    async with AsyncKVClient(cluster.endpoints[1:], route=False, timeout=20) as kv:
        writes = await asyncio.gather(
            *(kv.put(k, k, consistency="ALL") for k in keys), return_exceptions=True
        )
        reads = await asyncio.gather(*(kv.get(k, consistency="ALL") for k in keys), return_exceptions=True)
        stats = kv.coalesce_stats
        assert stats is not None and stats.rpcs < stats.calls, "the calls never shared an RPC"
        placement = Placement(await kv.admin.membership())
    # With RF=2 on 4 nodes, about half the keys have the dead node as a replica: ALL fails for
    # those alone. Without splitting, one such key would have failed its whole batch.
    dead = cluster.endpoints[0]
    failed = {k for k, w in zip(keys, writes, strict=True) if isinstance(w, Unavailable)}
    assert all(isinstance(w, WriteResult | Unavailable) for w in writes), writes
    assert failed == {
        k
        for k in keys
        if dead
        in (
            placement.membership.address_of(i)
            for i in placement.read_replicas(placement.partition(k.encode()))
        )
    }
    assert 0 < len(failed) < len(keys)
    for k, r in zip(keys, reads, strict=True):
        if k in failed:
            assert isinstance(r, Unavailable)
        else:
            assert isinstance(r, Entry) and r.value == k.encode()

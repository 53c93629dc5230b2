"""Many calls in flight on one client: every answer must belong to its own request.

The system this store replaces returned another request's answer under concurrency, so these
tests check the value of every single response, not just that calls succeed.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from kvnode.client import AsyncKVClient, KVClient
from kvnode.testing.processes import ProcessCluster

# Thousands of calls queue up on two cores; give each the time the whole burst needs.
TIMEOUT = 30.0


async def test_2000_concurrent_gets_each_get_their_own_value(
    shared_cluster3: ProcessCluster, keyspace: str
) -> None:
    keys = [f"{keyspace}{i:03d}" for i in range(200)]
    async with AsyncKVClient(shared_cluster3.endpoints, timeout=TIMEOUT) as kv:
        await kv.batch_write({k: f"value-of-{k}" for k in keys})
        wanted = [keys[i % len(keys)] for i in range(2000)]
        entries = await asyncio.gather(*(kv.get(k) for k in wanted))
    wrong = [
        (k, e.key if e else None)
        for k, e in zip(wanted, entries, strict=True)
        if e is None or e.key != k.encode()
    ]
    assert not wrong, f"{len(wrong)} of 2000 gets answered for another key, e.g. {wrong[:3]}"
    assert all(
        e is not None and e.value == f"value-of-{k}".encode() for k, e in zip(wanted, entries, strict=True)
    )


async def test_1000_concurrent_puts_are_all_acknowledged_and_readable(
    shared_cluster3: ProcessCluster, keyspace: str
) -> None:
    items = {f"{keyspace}{i:04d}": f"v{i}".encode() for i in range(1000)}
    async with AsyncKVClient(shared_cluster3.endpoints, timeout=TIMEOUT) as kv:
        results = await asyncio.gather(*(kv.put(k, v) for k, v in items.items()))
        assert len({r.version for r in results}) == 1000
        keys = list(items)
        stored = []
        for i in range(0, len(keys), 500):
            stored += await kv.batch_get(keys[i : i + 500])
    assert [e.value if e else None for e in stored] == list(items.values())
    assert [e.version if e else None for e in stored] == [r.version for r in results]


def test_sync_client_shared_by_many_threads(shared_cluster3: ProcessCluster, keyspace: str) -> None:
    threads, per_thread = 16, 40
    shared_keys = [f"{keyspace}shared{i}" for i in range(20)]
    mismatches: list[str] = []
    lock = threading.Lock()

    def work(kv: KVClient, t: int) -> int:
        done = 0
        for i in range(per_thread):
            own = f"{keyspace}t{t}/{i}"
            kv.put(own, f"{t}:{i}")
            got = kv.get(own)
            shared = shared_keys[(t + i) % len(shared_keys)]
            other = kv.get(shared)
            with lock:
                if got is None or got.value != f"{t}:{i}".encode():
                    mismatches.append(f"{own} -> {got}")
                if other is None or other.value != shared.encode():
                    mismatches.append(f"{shared} -> {other}")
            done += 1
        return done

    with KVClient(shared_cluster3.endpoints, timeout=TIMEOUT) as kv:
        kv.batch_write({k: k for k in shared_keys})
        with ThreadPoolExecutor(threads) as pool:
            done = sum(pool.map(lambda t: work(kv, t), range(threads)))
    assert done == threads * per_thread
    assert not mismatches, mismatches[:5]

"""The client's data calls against real nodes: one node, and three nodes with RF=3."""

from __future__ import annotations

import pytest

from kvnode.client import AsyncKVClient, Entry, InvalidArgument, KVClient, Level, ScanPage
from kvnode.core.records import Version
from kvnode.testing.processes import ProcessCluster, wait_until


async def test_put_get_delete(kv: AsyncKVClient, keyspace: str) -> None:
    key = keyspace + "a"
    written = await kv.put(key, b"one")
    assert isinstance(written.version, Version)
    assert written.previous is None
    entry = await kv.get(key)
    assert entry == Entry(key.encode(), b"one", written.version)

    deleted = await kv.delete(key)
    assert deleted.version > written.version
    assert await kv.get(key) is None
    # Deleting what is not there succeeds.
    await kv.delete(key)


async def test_missing_key_is_none(kv: AsyncKVClient, keyspace: str) -> None:
    assert await kv.get(keyspace + "never-written") is None


async def test_return_previous(kv: AsyncKVClient, keyspace: str) -> None:
    key = keyspace + "p"
    first = await kv.put(key, "v1", return_previous=True)
    assert first.previous is None
    second = await kv.put(key, "v2", return_previous=True)
    assert second.previous == Entry(key.encode(), b"v1", first.version)
    # Without asking, nothing comes back.
    assert (await kv.put(key, "v3")).previous is None
    gone = await kv.delete(key, return_previous=True)
    assert gone.previous is not None and gone.previous.value == b"v3"
    assert (await kv.delete(key, return_previous=True)).previous is None


async def test_str_and_bytes_keys_are_the_same_key(kv: AsyncKVClient, keyspace: str) -> None:
    key = keyspace + "ünïcode"
    await kv.put(key, "välue")
    entry = await kv.get(key.encode())
    assert entry is not None
    assert entry.key == key.encode() and entry.value == "välue".encode()
    await kv.put(bytearray(key.encode()), memoryview(b"\x00\xff binary"))
    entry = await kv.get(key)
    assert entry is not None and entry.value == b"\x00\xff binary"


async def test_wrong_key_type_is_a_type_error(kv: AsyncKVClient) -> None:
    with pytest.raises(TypeError, match="key must be bytes or str"):
        await kv.get(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("level", ["QUORUM", "all", Level.LINEARIZABLE, None])
async def test_consistency_per_call(kv: AsyncKVClient, keyspace: str, level: Level | str | None) -> None:
    """Reading at the level a write used sees the write: R + W > RF (the node's default is QUORUM)."""
    key = keyspace + "c"
    await kv.put(key, "x", consistency=level)
    entry = await kv.get(key, consistency=level)
    assert entry is not None and entry.value == b"x"
    await kv.delete(key, consistency=level)
    assert await kv.get(key, consistency=level) is None


async def test_writes_at_one_become_visible_at_one(kv: AsyncKVClient, keyspace: str) -> None:
    """ONE promises no read-your-writes (the read may ask a replica the write has not reached yet),
    only that every replica gets the write soon: a read at ONE sees it within the replica timeout."""
    key = keyspace + "one"
    await kv.put(key, "x", consistency=Level.ONE)

    async def visible() -> bool:
        entry = await kv.get(key, consistency=Level.ONE)
        return entry is not None and entry.value == b"x"

    await wait_until(visible, 10, "a write at ONE to be read at ONE")
    await kv.delete(key, consistency=Level.ONE)

    async def gone() -> bool:
        return await kv.get(key, consistency=Level.ONE) is None

    await wait_until(gone, 10, "a delete at ONE to be seen at ONE")


async def test_unknown_consistency_name_is_refused_locally(kv: AsyncKVClient) -> None:
    with pytest.raises(ValueError, match="unknown consistency level"):
        await kv.get("k", consistency="SOME")


async def test_client_default_consistency_applies(cluster: ProcessCluster, keyspace: str) -> None:
    # LINEARIZABLE is refused for batches by the node: proof the client's default was sent.
    async with AsyncKVClient(cluster.endpoints, consistency="LINEARIZABLE") as kv:
        await kv.put(keyspace + "d", "x")
        with pytest.raises(InvalidArgument, match="single-key"):
            await kv.batch_get([keyspace + "d"])
        assert len(await kv.batch_get([keyspace + "d"], consistency="QUORUM")) == 1


async def test_batch_write_and_batch_get(kv: AsyncKVClient, keyspace: str) -> None:
    await kv.put(keyspace + "doomed", "x")
    versions = await kv.batch_write(
        {keyspace + f"b{i}": f"v{i}" for i in range(10)}, deletes=[keyspace + "doomed"]
    )
    assert len(versions) == 11
    keys = [keyspace + f"b{i}" for i in range(10)] + [keyspace + "doomed", keyspace + "nothing"]
    entries = await kv.batch_get(keys)
    assert [e.value if e else None for e in entries] == [f"v{i}".encode() for i in range(10)] + [None, None]
    assert [e.version for e in entries[:10] if e] == versions[:10]
    # Pairs work as well as a mapping.
    await kv.batch_write([(keyspace + "pair", b"p")])
    assert await kv.get(keyspace + "pair") is not None


async def test_scan_pages_and_iteration(kv: AsyncKVClient, keyspace: str) -> None:
    keys = [f"{keyspace}s/{i:03d}".encode() for i in range(25)]
    await kv.batch_write({k: b"v" + k[-3:] for k in keys})
    prefix = keyspace + "s/"

    seen = [e.key async for e in kv.scan(prefix=prefix, page_size=4)]
    assert seen == keys

    pages = 0
    token = b""
    collected: list[bytes] = []
    while True:
        page = await kv.scan_page(prefix=prefix, limit=10, token=token)
        assert isinstance(page, ScanPage) and len(page.entries) <= 10
        entries, token = page
        collected += [e.key for e in entries]
        pages += 1
        if not token:
            break
    assert collected == keys and pages >= 3

    limited = [e async for e in kv.scan(prefix=prefix, limit=7, page_size=3)]
    assert [e.key for e in limited] == keys[:7]
    assert limited[0].value == b"v000"

    bounded = [e.key async for e in kv.scan(start=keys[5], end=keys[9])]
    assert bounded == keys[5:9]

    bare = [e async for e in kv.scan(prefix=prefix, keys_only=True)]
    assert [e.key for e in bare] == keys and all(e.value == b"" for e in bare)


def test_sync_client_twin(cluster: ProcessCluster, keyspace: str) -> None:
    with KVClient(cluster.endpoints) as kv:
        put = kv.put(keyspace + "k", "v", return_previous=True)
        assert put.previous is None
        assert kv.get(keyspace + "k") == Entry((keyspace + "k").encode(), b"v", put.version)
        assert kv.get(keyspace + "none") is None
        kv.batch_write({keyspace + f"s{i}": "x" for i in range(5)})
        assert [e.key for e in kv.scan(prefix=keyspace + "s", page_size=2)] == [
            f"{keyspace}s{i}".encode() for i in range(5)
        ]
        # Leaving a scan early closes it cleanly.
        for _ in kv.scan(prefix=keyspace, page_size=1):
            break
        assert kv.batch_get([keyspace + "k", keyspace + "none"])[1] is None
        assert kv.delete(keyspace + "k", return_previous=True).previous is not None
        assert kv.membership is None or kv.membership.partitions == 64


def test_admin_calls(cluster: ProcessCluster) -> None:
    with KVClient(cluster.endpoints) as kv:
        reports = kv.admin.status_all()
        assert [r.address for r in reports] == cluster.endpoints
        assert all(r.status is not None and r.error is None for r in reports)
        assert {r.status.node_id for r in reports if r.status} == {n.node_id for n in cluster.nodes}
        membership = kv.admin.membership()
        assert {m.address for m in membership.members} == set(cluster.endpoints)
        first = cluster.endpoints[0]
        assert kv.admin.status(first).node_id == cluster.nodes[0].node_id
        assert kv.admin.run_anti_entropy(first).partitions_compared >= 0
        assert kv.admin.partition_digests(first).node_id == cluster.nodes[0].node_id
        assert list(kv.admin.list_backups("/nonexistent-kvctl-test-dir").backups) == []

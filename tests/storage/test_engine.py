from __future__ import annotations

from pathlib import Path

import pytest

from kvnode.core.errors import StorageFull
from kvnode.core.placement import partition_of
from kvnode.core.records import Record, Version
from kvnode.storage.engine import Storage


def rec(key: str, value: str, hlc: int, node: str = "a", tombstone: bool = False) -> Record:
    return Record(key.encode(), value.encode(), Version(hlc, node), tombstone)


def put(store: Storage, *records: Record, want_previous: bool = False) -> list[tuple[bool, Record | None]]:
    return store.write(lambda txn: [txn.apply(r, want_previous) for r in records])


def test_every_value_is_stored_with_its_version(store: Storage) -> None:
    put(store, rec("k", "v1", 10))
    assert store.get(b"k") == rec("k", "v1", 10)


def test_newer_version_wins_and_older_is_ignored(store: Storage) -> None:
    put(store, rec("k", "v2", 20))
    assert put(store, rec("k", "v1", 10)) == [(False, None)]
    assert store.get(b"k") == rec("k", "v2", 20)
    assert put(store, rec("k", "v3", 20, node="b"), want_previous=True) == [(True, rec("k", "v2", 20))]
    assert store.get(b"k") == rec("k", "v3", 20, node="b")


def test_the_same_record_again_is_stored_once_and_counts_as_stored(store: Storage) -> None:
    """A coordinator that sends a write again (after a stale epoch) must hear that it is held."""
    put(store, rec("k", "v", 5))
    assert put(store, rec("k", "v", 5)) == [(True, None)]
    assert store.stats().records == 1


def test_delete_writes_a_tombstone_that_shadows_older_writes(store: Storage) -> None:
    put(store, rec("k", "v", 10), rec("k", "", 20, tombstone=True))
    assert store.get(b"k") == rec("k", "", 20, tombstone=True)
    put(store, rec("k", "late", 15))
    assert store.get(b"k") == rec("k", "", 20, tombstone=True)
    assert store.stats().tombstones == 1
    assert store.stats().keys == 0


def test_scan_returns_keys_in_order_within_range_and_prefix(store: Storage) -> None:
    put(store, *(rec(f"user/{i:03}", f"v{i}", 1) for i in range(20)), rec("other", "x", 1))
    records, exhausted = store.scan(b"", b"", b"user/", 5)
    assert [r.key for r in records] == [f"user/{i:03}".encode() for i in range(5)]
    assert not exhausted
    records, exhausted = store.scan(b"user/015", b"user/018", b"user/", 100, keys_only=True)
    assert [r.key for r in records] == [b"user/015", b"user/016", b"user/017"]
    assert all(r.value == b"" for r in records)
    assert exhausted


def test_digest_changes_with_content_and_matches_for_equal_content(tmp_path: Path) -> None:
    a = Storage(tmp_path / "a", partitions=16, map_size=1 << 20)
    b = Storage(tmp_path / "b", partitions=16, map_size=1 << 20)
    try:
        records = [rec(f"k{i}", "v", i + 1) for i in range(50)]
        put(a, *records)
        put(b, *reversed(records))  # order of arrival does not matter
        assert a.digests() == b.digests()
        put(b, rec("k3", "newer", 100))
        assert a.digests() != b.digests()
        put(a, rec("k3", "newer", 100))
        assert a.digests() == b.digests()
        assert sum(count for _, _, count in a.digests()) == 50
    finally:
        a.close()
        b.close()


def test_partition_pages_cover_exactly_the_partitions_keys(store: Storage) -> None:
    put(store, *(rec(f"k{i}", "v", 1) for i in range(200)))
    p = partition_of(b"k1", 16)
    expected = sorted(f"k{i}".encode() for i in range(200) if partition_of(f"k{i}".encode(), 16) == p)
    seen: list[bytes] = []
    after = b""
    while True:
        page, exhausted = store.fetch_partition(p, after, 3)
        seen += [r.key for r in page]
        if exhausted:
            break
        after = page[-1].key
    assert seen == expected
    versions, _ = store.key_versions(p, b"", 1000)
    assert [k for k, _, _ in versions] == expected


def test_tombstones_are_collected_after_the_horizon_only(store: Storage) -> None:
    put(store, rec("old", "", 10, tombstone=True), rec("new", "", 1000, tombstone=True), rec("live", "v", 5))
    before = dict((p, d) for p, d, _ in store.digests())
    assert store.write(lambda txn: txn.collect_tombstones(500, 100)) == 1
    assert store.get(b"old") is None
    assert store.get(b"new") is not None
    assert store.get(b"live") is not None
    assert store.stats().tombstones == 1
    assert dict((p, d) for p, d, _ in store.digests()) != before


def test_hints_survive_reopen_and_are_deleted_once(tmp_path: Path) -> None:
    store = Storage(tmp_path / "db", partitions=16, map_size=1 << 20)
    store.write(lambda txn: [txn.add_hint("kv-1", rec(f"k{i}", "v", i), created_ms=1) for i in range(3)])
    store.close()
    store = Storage(tmp_path / "db", partitions=16, map_size=1 << 20)
    try:
        hints = store.hints("kv-1")
        assert [h.record.key for h in hints if h.record] == [b"k0", b"k1", b"k2"]
        assert store.hint_totals()["kv-1"][0] == 3
        freed = store.write(lambda txn: [txn.delete_hint(h.id) for h in hints])
        assert all(freed)
        assert store.hints() == []
        # a new hint after reopening never reuses an old id
        store.write(lambda txn: txn.add_hint("kv-1", rec("x", "v", 1), created_ms=1))
        assert store.hints()[0].id not in {h.id for h in hints}
    finally:
        store.close()


def test_map_grows_by_itself_when_it_fills(store: Storage) -> None:
    start = store.stats().map_size
    big = "x" * 4000
    for batch in range(10):
        put(store, *(rec(f"k{batch}-{i}", big, 1) for i in range(100)))
    assert store.stats().map_size > start
    assert store.stats().keys == 1000
    assert store.get(b"k0-0") == rec("k0-0", big, 1)


def test_full_map_fails_with_resource_exhausted_and_keeps_earlier_data(tmp_path: Path) -> None:
    store = Storage(tmp_path / "db", partitions=16, map_size=1 << 20, max_map_size=2 << 20)
    try:
        put(store, rec("kept", "safe", 1))
        with pytest.raises(StorageFull, match="max-map-size"):
            for batch in range(100):
                put(store, *(rec(f"k{batch}-{i}", "x" * 4000, 1) for i in range(50)))
        assert store.get(b"kept") == rec("kept", "safe", 1)
    finally:
        store.close()


def test_full_disk_fails_with_resource_exhausted_and_keeps_earlier_data(small_disk: Path) -> None:
    store = Storage(small_disk / "db", partitions=16, map_size=64 << 20)
    try:
        put(store, rec("kept", "safe", 1))
        written = 0
        with pytest.raises(StorageFull, match="disk full"):
            for batch in range(1000):
                put(store, *(rec(f"k{batch}-{i}", "x" * 2000, 1) for i in range(20)))
                written += 20
        assert written > 0
        assert store.get(b"kept") == rec("kept", "safe", 1)
        assert store.get(b"k0-0") is not None
        assert store.stats().keys == written + 1
    finally:
        store.close()
    reopened = Storage(small_disk / "db", partitions=16, map_size=64 << 20)
    try:
        assert reopened.stats().keys == written + 1
    finally:
        reopened.close()

"""A real LMDB store with real damage in its file: a record that fails its check is never served by
any read, a repair with the same version replaces it (indexes and digest made right), a scrub's
check finds it and what else needs fixing, and a damaged data file is refused before LMDB maps it."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvnode.core.placement import partition_of
from kvnode.core.records import Record, Version
from kvnode.storage.engine import Storage
from kvnode.storage.lmdbfile import DamagedFile
from kvnode.storage.ops import Scrubbed
from kvnode.storage.schema import DATA, Corrupt, encode_value, has_checksum
from kvnode.testing.damage import break_meta_page, break_page_holding, flip_byte, truncate
from tests.storage.test_checksum import legacy

PARTITIONS = 4
WRITER = "kv-0"


def rec(key: bytes, value: bytes, hlc: int = 10, *, writer: str = WRITER, tomb: bool = False) -> Record:
    return Record(key, b"" if tomb else value, Version(hlc, writer), tomb)


class Found:
    """The store's corruption sink: what was reported, and by which read."""

    def __init__(self) -> None:
        self.reports: list[tuple[bytes, str]] = []

    def __call__(self, corrupt: Corrupt, where: str) -> None:
        self.reports.append((corrupt.key, where))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Storage]:
    storage = Storage(tmp_path / "db", partitions=PARTITIONS, map_size=1 << 22)
    yield storage
    storage.close()


def put(store: Storage, *records: Record) -> None:
    store.write(lambda txn: [txn.apply(r) for r in records])


def same_partition(key: bytes, count: int) -> list[bytes]:
    """``count`` other keys in ``key``'s partition."""
    wanted = partition_of(key, PARTITIONS)
    return [k for n in range(1000) if partition_of(k := f"other-{n}".encode(), PARTITIONS) == wanted][:count]


BAD = rec(b"bad", b"<<a value that rots on disk>>")
GOOD = [rec(k, b"fine") for k in same_partition(BAD.key, 3)]


def rot(store: Storage) -> None:
    """Flip one bit in the middle of BAD's value, in the file."""
    flip_byte(store.path / "data.mdb", BAD.value, offset=7)


def test_a_record_that_fails_its_check_is_never_served(store: Storage) -> None:
    put(store, BAD, *GOOD)
    found = Found()
    store.report_corruption(found)
    rot(store)

    assert isinstance(store.get(BAD.key), Corrupt)
    assert store.get_many([GOOD[0].key, BAD.key, b"absent"])[::2] == [GOOD[0], None]
    records, _ = store.scan(b"", b"", b"", 100)
    assert BAD.key not in [r.key for r in records] and len(records) == len(GOOD)
    partition = partition_of(BAD.key, PARTITIONS)
    fetched, _ = store.fetch_partition(partition, b"", 100)
    assert sorted(r.key for r in fetched) == sorted(r.key for r in GOOD)
    listed, _ = store.key_versions(partition, b"", 100)
    assert BAD.key not in [key for key, _, _ in listed]
    assert found.reports == [(BAD.key, w) for w in ("read", "read", "scan", "fetch", "key_versions")]


def digest_of(store: Storage, key: bytes) -> tuple[bytes, int]:
    ((_, digest, count),) = store.digests([partition_of(key, PARTITIONS)])
    return digest, count


def test_a_repair_with_the_same_version_replaces_a_corrupt_copy(store: Storage, tmp_path: Path) -> None:
    intact = Storage(tmp_path / "intact", partitions=PARTITIONS, map_size=1 << 22)
    try:
        put(intact, BAD, *GOOD)
        expected = digest_of(intact, BAD.key)
    finally:
        intact.close()
    put(store, BAD, *GOOD)
    rot(store)
    assert digest_of(store, BAD.key) == expected  # the digest it was written with hides it

    put(store, BAD)

    assert store.get(BAD.key) == BAD
    assert digest_of(store, BAD.key) == expected
    check = store.check_partition(partition_of(BAD.key, PARTITIONS))
    assert (check.corrupt, check.digest_ok, check.checked) == ([], True, 4)


def test_the_scrub_check_finds_a_corrupt_record_its_digest_hides(store: Storage) -> None:
    put(store, BAD, *GOOD)
    partition = partition_of(BAD.key, PARTITIONS)
    rot(store)
    check = store.check_partition(partition)
    assert check.corrupt == [BAD.key]
    assert not check.digest_ok and check.unchecked == []

    store.write(Scrubbed(partition, [], recount=True).run)  # what the scrub then writes

    assert digest_of(store, BAD.key)[1] == len(GOOD)  # now anti-entropy sees a difference
    assert store.check_partition(partition).digest_ok
    put(store, BAD)  # and a repair fixes it for good
    check = store.check_partition(partition)
    assert (check.corrupt, check.digest_ok) == ([], True)
    assert digest_of(store, BAD.key)[1] == len(GOOD) + 1


def test_an_index_entry_without_its_record_is_found_and_dropped(store: Storage) -> None:
    put(store, BAD, *GOOD)
    partition = partition_of(BAD.key, PARTITIONS)
    store.write(lambda txn: txn.txn.delete(BAD.key, db=store.dbs.data))  # lost, as a flipped key loses it
    check = store.check_partition(partition)
    assert check.corrupt == [BAD.key] and not check.digest_ok
    store.write(Scrubbed(partition, [], recount=True).run)
    check = store.check_partition(partition)
    assert (check.corrupt, check.digest_ok, check.checked) == ([], True, len(GOOD))


def test_a_tombstone_index_left_by_a_corrupt_copy_never_collects_a_live_record(store: Storage) -> None:
    """A corrupt tombstone's index entry outlives it when a repair replaces it; collecting that
    entry must not delete the live record now stored under the key."""
    writer = "writer-whose-id-rots"
    put(store, rec(b"k", b"", 50, writer=writer, tomb=True))
    flip_byte(store.path / "data.mdb", writer.encode(), offset=3)
    live = rec(b"k", b"alive", 20)
    put(store, live)  # older than the tombstone was, but the tombstone is unreadable
    collected = store.write(lambda txn: txn.collect_tombstones(horizon_hlc=1 << 62, limit=10))
    assert collected == 1
    assert store.get(b"k") == live
    assert store.stats().tombstones == 0


def test_records_written_before_checksums_get_one_from_the_scrub(store: Storage) -> None:
    put(store, BAD, *GOOD)
    old = {r.key: legacy(r) for r in (BAD, *GOOD)}
    store.write(lambda txn: [txn.txn.put(k, raw, db=store.dbs.data) for k, raw in old.items()])
    partition = partition_of(BAD.key, PARTITIONS)
    check = store.check_partition(partition)
    assert sorted(check.unchecked) == sorted(old) and check.digest_ok and check.corrupt == []
    assert store.get(BAD.key) == BAD  # read without a check meanwhile

    assert store.write(Scrubbed(partition, check.unchecked, recount=False).run) == len(old)

    with store.reading() as txn:
        raws = {k: txn.get(k, db=store.dbs.data) for k in old}
    assert all(has_checksum(raw) for raw in raws.values())
    assert raws[BAD.key] == encode_value(BAD)
    assert store.check_partition(partition).unchecked == []


def test_a_damaged_lmdb_page_reports_its_keys_as_corrupt(store: Storage) -> None:
    """LMDB's own check of a page (MDB_CORRUPTED) fails only the keys on that page."""
    records = [rec(f"key-{n:04}".encode(), f"<<value-{n:04}>>".encode() * 4) for n in range(2000)]
    put(store, *records)
    found = Found()
    store.report_corruption(found)
    break_page_holding(store.path / "data.mdb", b"<<value-1234>>")

    damaged, elsewhere = store.get_many([b"key-1234", b"key-0001"])

    assert isinstance(damaged, Corrupt) and "MDB_CORRUPTED" in damaged.reason
    assert elsewhere == records[1]
    assert found.reports == [(b"key-1234", "read")]


# -- damaged data files ----------------------------------------------------------------------------


def filled(folder: Path) -> Path:
    """A closed store of a few hundred pages; returns its data file."""
    storage = Storage(folder, partitions=PARTITIONS, map_size=1 << 24)
    put(storage, *(rec(f"key-{n}".encode(), bytes(2000)) for n in range(500)))
    storage.close()
    return folder / "data.mdb"


def test_a_truncated_data_file_is_refused_before_lmdb_maps_it(tmp_path: Path) -> None:
    path = filled(tmp_path / "db")
    size = truncate(path)
    with pytest.raises(DamagedFile, match=rf"is truncated: it holds {size} bytes, but its metadata"):
        Storage(tmp_path / "db", partitions=PARTITIONS, map_size=1 << 24)


def test_lmdb_itself_dies_of_sigbus_on_the_same_file(tmp_path: Path) -> None:
    """Why the check must come first: LMDB reads the missing pages through its map."""
    path = filled(tmp_path / "db")
    truncate(path)
    read_all = (
        "import lmdb, sys; env = lmdb.open(sys.argv[1], max_dbs=8, readonly=True, lock=False); "
        f"db = env.open_db({DATA!r}, create=False); txn = env.begin(); "
        "print(sum(1 for _ in txn.cursor(db=db)))"
    )
    result = subprocess.run([sys.executable, "-c", read_all, str(path.parent)], capture_output=True)
    assert result.returncode == -signal.SIGBUS, result


@pytest.mark.parametrize("page", [0, 1])
def test_a_broken_meta_page_is_refused(tmp_path: Path, page: int) -> None:
    path = filled(tmp_path / "db")
    break_meta_page(path, page)
    with pytest.raises(DamagedFile, match=rf"meta page {page} has magic 0x0, not LMDB's 0xbeefc0de"):
        Storage(tmp_path / "db", partitions=PARTITIONS, map_size=1 << 24)


def test_an_empty_data_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "data.mdb").touch()
    with pytest.raises(DamagedFile, match="is empty"):
        Storage(tmp_path / "db", partitions=PARTITIONS, map_size=1 << 24)


def test_a_whole_data_file_opens(tmp_path: Path) -> None:
    filled(tmp_path / "db")
    storage = Storage(tmp_path / "db", partitions=PARTITIONS, map_size=1 << 24)
    try:
        assert storage.stats().records == 500
    finally:
        storage.close()

"""Every key length from 1 to the longest the schema allows, through every index of the store."""

from __future__ import annotations

from kvnode.core.records import Record, Version
from kvnode.storage.engine import Storage
from kvnode.storage.ops import ApplyRecords, unstorable
from kvnode.storage.schema import MAX_KEY_BYTES


def key(length: int) -> bytes:
    return (b"%d/" % length + b"k" * length)[:length]


def test_every_key_length_up_to_the_schema_limit_is_stored_indexed_and_removed(store: Storage) -> None:
    lengths = range(1, MAX_KEY_BYTES + 1)
    keys = [key(n) for n in lengths]
    store.write(lambda txn: [txn.apply(Record(k, b"v", Version(1, "a"))) for k in keys])
    assert store.get_many(keys) == [Record(k, b"v", Version(1, "a")) for k in keys]
    # Deleting writes a tombstone (the ``tombs`` index prefixes the key with 8 bytes of clock).
    store.write(lambda txn: [txn.apply(Record(k, b"", Version(2, "a"), tombstone=True)) for k in keys])
    assert store.stats().tombstones == len(keys)
    by_partition = sum(len(store.fetch_partition(p, b"", 10_000)[0]) for p in range(store.partitions))
    assert by_partition == len(keys)  # every key is in the partition index too
    store.write(lambda txn: [txn.add_hint("kv-1", Record(k, b"v", Version(3, "a")), 1) for k in keys])
    assert len(store.hints("kv-1")) == len(keys)
    assert store.write(lambda txn: txn.collect_tombstones(3, 10_000)) == len(keys)
    assert store.stats().records == 0


def test_a_longer_key_is_refused_before_the_transaction_touches_it(store: Storage) -> None:
    """One row too long beside good ones: it is refused alone and leaves no index entry behind."""
    too_long = b"x" * (MAX_KEY_BYTES + 1)
    rows = ApplyRecords.of((Record(k, b"v", Version(1, "a")), False) for k in (b"good1", too_long, b"good2"))
    results = store.write(rows.run)
    assert results[0] == (True, None) and results[2] == (True, None)
    assert unstorable(rows.rows[1]) is not None and str(results[1]) == str(unstorable(rows.rows[1]))
    assert store.stats().records == 2

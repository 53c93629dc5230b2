"""The on-disk encodings of the storage schema: records round-trip, and a record's hash (what
anti-entropy's digests are made of) changes with anything that names a different write."""

from __future__ import annotations

from kvnode.core.records import Record, Version
from kvnode.storage.schema import (
    decode_hint,
    decode_value,
    decode_version,
    encode_hint,
    encode_value,
    hint_id,
    hint_sequence,
    hint_target,
    record_hash,
)


def test_encoding_round_trips_values_and_tombstones() -> None:
    for rec in (
        Record(b"k", b"value \x00 bytes", Version(123456789, "kv-0")),
        Record(b"k", b"", Version(1, "node-with-a-long-name"), tombstone=True),
    ):
        raw = encode_value(rec)
        assert decode_value(rec.key, raw) == rec
        assert decode_version(rec.key, raw) == (rec.version, rec.tombstone)


def test_record_hash_depends_on_key_version_and_tombstone() -> None:
    base = record_hash(b"k", Version(1, "a"), False)
    assert base == record_hash(b"k", Version(1, "a"), False)
    variants = {
        base,
        record_hash(b"k2", Version(1, "a"), False),
        record_hash(b"k", Version(2, "a"), False),
        record_hash(b"k", Version(1, "b"), False),
        record_hash(b"k", Version(1, "a"), True),
    }
    assert len(variants) == 5


def test_hints_round_trip_and_sort_by_target_then_sequence() -> None:
    rec = Record(b"key", b"value", Version(5, "n1"))
    first, second = hint_id("n2", 9), hint_id("n2", 10)
    assert decode_hint(first, encode_hint(rec, 1234)).record == rec
    assert decode_hint(first, encode_hint(rec, 1234)).created_ms == 1234
    assert (hint_target(first), hint_sequence(first)) == ("n2", 9)
    assert first < second < hint_id("n3", 1)

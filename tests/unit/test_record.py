from kvnode.core.records import Record, Version, newest
from kvnode.storage.schema import decode_value, decode_version, encode_value, record_hash


def test_encoding_round_trips_values_and_tombstones() -> None:
    for rec in (
        Record(b"k", b"value \x00 bytes", Version(123456789, "kv-0")),
        Record(b"k", b"", Version(1, "node-with-a-long-name"), tombstone=True),
    ):
        raw = encode_value(rec)
        assert decode_value(rec.key, raw) == rec
        assert decode_version(raw) == (rec.version, rec.tombstone)


def test_versions_order_by_clock_then_node() -> None:
    assert Version(2, "a") > Version(1, "z")
    assert Version(1, "b") > Version(1, "a")


def test_newest_picks_the_highest_version_and_ignores_missing() -> None:
    old = Record(b"k", b"1", Version(1, "a"))
    new = Record(b"k", b"2", Version(2, "a"))
    assert newest([None, old, new, None]) == new
    assert newest([None, None]) is None


def test_record_hash_depends_on_key_version_and_tombstone() -> None:
    base = record_hash(b"k", Version(1, "a"), False)
    assert base == record_hash(b"k", Version(1, "a"), False)
    assert (
        len(
            {
                base,
                record_hash(b"k2", Version(1, "a"), False),
                record_hash(b"k", Version(2, "a"), False),
                record_hash(b"k", Version(1, "b"), False),
                record_hash(b"k", Version(1, "a"), True),
            }
        )
        == 5
    )

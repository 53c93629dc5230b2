"""Versions and records: the order every replica resolves writes by, and how records are split
into messages."""

from __future__ import annotations

from kvnode.core.records import Record, Version, chunked, newest


def test_versions_order_by_clock_then_node() -> None:
    assert Version(2, "a") > Version(1, "z")
    assert Version(1, "b") > Version(1, "a")


def test_newest_picks_the_highest_version_and_ignores_missing() -> None:
    old = Record(b"k", b"1", Version(1, "a"))
    new = Record(b"k", b"2", Version(2, "a"))
    assert newest([None, old, new, None]) == new
    assert newest([None, None]) is None


def test_records_round_trip_through_protobuf_and_tombstones_read_as_not_found() -> None:
    live = Record(b"k", b"v", Version(7, "n1"))
    dead = Record(b"k", b"", Version(8, "n1"), tombstone=True)
    assert Record.from_proto(live.to_proto()) == live
    assert Record.from_proto(dead.to_proto()) == dead
    assert live.to_key_value().found and live.to_key_value(keys_only=True).value == b""
    assert not dead.to_key_value().found


def test_chunks_keep_to_the_item_and_byte_budgets_and_lose_nothing() -> None:
    records = [Record(b"k%03d" % i, b"x" * 100, Version(i, "a")) for i in range(25)]
    by_items = list(chunked(records, max_items=10))
    assert [len(c) for c in by_items] == [10, 10, 5]
    by_bytes = list(chunked(records, max_bytes=400))  # ~168 bytes a record: two fit
    assert all(len(c) == 2 for c in by_bytes[:-1])
    assert [r for c in by_bytes for r in c] == records


def test_a_record_over_the_byte_budget_travels_alone() -> None:
    big = Record(b"big", b"x" * 1000, Version(1, "a"))
    small = Record(b"small", b"x", Version(2, "a"))
    assert list(chunked([small, big, small], max_bytes=500)) == [[small], [big], [small]]

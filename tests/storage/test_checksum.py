"""The record checksum: records round-trip with it, records written before it still read, and one
changed byte anywhere in the key, the header or the value is caught."""

from __future__ import annotations

import struct

import pytest

from kvnode.core.records import Record, Version
from kvnode.storage.schema import (
    ChecksumError,
    decode_hint,
    decode_value,
    decode_version,
    encode_hint,
    encode_value,
    has_checksum,
)

RECORDS = (
    Record(b"k", b"value \x00 bytes", Version(123456789, "kv-0")),
    Record(b"a longer key/with/parts", bytes(range(256)) * 4, Version(2**63 + 5, "node-with-a-long-name")),
    Record(b"k", b"", Version(1, "kv-1"), tombstone=True),
    Record(b"\x00", b"", Version(0, "n")),
)


def legacy(record: Record) -> bytes:
    """A record as kvnode stored it before checksums (commit 2b84b13 to 5cdd1bb)."""
    node = record.version.node_id.encode()
    head = struct.pack(">QBB", record.version.hlc, 1 if record.tombstone else 0, len(node))
    return head + node + record.value


def changed(data: bytes, at: int, mask: int) -> bytes:
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]


@pytest.mark.parametrize("record", RECORDS)
def test_records_round_trip_with_a_checksum(record: Record) -> None:
    raw = encode_value(record)
    assert has_checksum(raw)
    assert decode_value(record.key, raw) == record
    assert decode_version(record.key, raw) == (record.version, record.tombstone)


@pytest.mark.parametrize("record", RECORDS)
def test_records_written_before_checksums_read_unchecked(record: Record) -> None:
    raw = legacy(record)
    assert not has_checksum(raw)
    assert decode_value(record.key, raw) == record
    assert decode_version(record.key, raw) == (record.version, record.tombstone)


@pytest.mark.parametrize("record", RECORDS)
@pytest.mark.parametrize("mask", [0x01, 0x02, 0x10, 0x80, 0xFF])
def test_a_changed_byte_anywhere_in_the_stored_record_is_caught(record: Record, mask: int) -> None:
    raw = encode_value(record)
    for at in range(len(raw)):
        with pytest.raises(ChecksumError):
            decode_value(record.key, changed(raw, at, mask))
        with pytest.raises(ChecksumError):
            decode_version(record.key, changed(raw, at, mask))


@pytest.mark.parametrize("record", RECORDS)
def test_every_value_of_every_header_byte_but_the_right_one_is_caught(record: Record) -> None:
    """The header holds what a flip could turn into another valid layout: the flags (clearing the
    checksum flag would make the record look older than checksums) and the lengths."""
    raw = encode_value(record)
    for at in range(15):  # hlc, flags, writer id length, marker, CRC
        for value in range(256):
            if value != raw[at]:
                with pytest.raises(ChecksumError):
                    decode_value(record.key, raw[:at] + bytes([value]) + raw[at + 1 :])


@pytest.mark.parametrize("record", RECORDS)
@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_a_changed_byte_in_the_key_is_caught(record: Record, mask: int) -> None:
    """The key is not stored in the value, but the checksum covers it: a record read under another
    key than it was written with (a flipped key in a page) fails."""
    raw = encode_value(record)
    for at in range(len(record.key)):
        with pytest.raises(ChecksumError):
            decode_value(changed(record.key, at, mask), raw)


@pytest.mark.parametrize("record", RECORDS)
def test_a_cut_record_is_caught(record: Record) -> None:
    for raw in (encode_value(record), legacy(record)):
        for end in range(len(raw) - len(record.value)):  # any cut that reaches into the header
            with pytest.raises(ChecksumError):
                decode_value(record.key, raw[:end])
    if record.value:
        with pytest.raises(ChecksumError):
            decode_value(record.key, encode_value(record)[:-1])


def test_hints_carry_the_checksum_of_their_record() -> None:
    record = RECORDS[1]
    raw = encode_hint(record, 1234)
    assert decode_hint(b"kv-1\x00" + bytes(8), raw).record == record
    with pytest.raises(ChecksumError):
        decode_hint(b"kv-1\x00" + bytes(8), changed(raw, len(raw) - 3, 0x04))

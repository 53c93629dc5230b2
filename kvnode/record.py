"""Versioned records and their on-disk encoding.

Every stored value carries a version ``(hlc, node_id)``; the newest version wins everywhere (local
writes, replication, read repair, anti-entropy). A delete is a record with ``tombstone=True``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from kvnode.api.v1 import types_pb2

_HEADER = struct.Struct(">QBB")  # hlc, flags, len(node_id)
_TOMBSTONE = 0x01


class Version(NamedTuple):
    """Ordered first by clock, then by node id, so concurrent writes resolve the same everywhere."""

    hlc: int
    node_id: str

    def to_proto(self) -> types_pb2.Version:
        return types_pb2.Version(hlc=self.hlc, node_id=self.node_id)

    @classmethod
    def from_proto(cls, msg: types_pb2.Version) -> Version:
        return cls(msg.hlc, msg.node_id)


class Record(NamedTuple):
    key: bytes
    value: bytes
    version: Version
    tombstone: bool = False

    def to_proto(self, *, keys_only: bool = False) -> types_pb2.Record:
        return types_pb2.Record(
            key=self.key,
            value=b"" if keys_only else self.value,
            version=self.version.to_proto(),
            tombstone=self.tombstone,
        )

    @classmethod
    def from_proto(cls, msg: types_pb2.Record) -> Record:
        return cls(msg.key, msg.value, Version.from_proto(msg.version), msg.tombstone)

    def to_key_value(self, *, keys_only: bool = False) -> types_pb2.KeyValue:
        """The public view of this record: a tombstone reads as not found."""
        if self.tombstone:
            return types_pb2.KeyValue(key=self.key, found=False)
        return types_pb2.KeyValue(
            key=self.key,
            found=True,
            value=b"" if keys_only else self.value,
            version=self.version.to_proto(),
        )


def newest(records: list[Record | None]) -> Record | None:
    """The record with the highest version, or None when there is none."""
    best: Record | None = None
    for rec in records:
        if rec is not None and (best is None or rec.version > best.version):
            best = rec
    return best


MESSAGE_BUDGET = 4 * 1024 * 1024


def chunked(
    records: Iterable[Record], max_items: int = 1000, max_bytes: int = MESSAGE_BUDGET
) -> Iterator[list[Record]]:
    """Split records into lists that fit one RPC: at most ``max_items`` and about ``max_bytes``
    (a single record over the budget still travels alone)."""
    chunk: list[Record] = []
    size = 0
    for rec in records:
        rec_size = len(rec.key) + len(rec.value) + 64
        if chunk and (len(chunk) >= max_items or size + rec_size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(rec)
        size += rec_size
    if chunk:
        yield chunk


def missing(key: bytes) -> types_pb2.KeyValue:
    return types_pb2.KeyValue(key=key, found=False)


def encode_value(record: Record) -> bytes:
    """The bytes stored under ``record.key``: header, writer id, then the value."""
    node = record.version.node_id.encode()
    flags = _TOMBSTONE if record.tombstone else 0
    return _HEADER.pack(record.version.hlc, flags, len(node)) + node + record.value


def decode_value(key: bytes, raw: bytes) -> Record:
    hlc, flags, node_len = _HEADER.unpack_from(raw)
    start = _HEADER.size
    node = raw[start : start + node_len].decode()
    return Record(key, raw[start + node_len :], Version(hlc, node), bool(flags & _TOMBSTONE))


def decode_version(raw: bytes) -> tuple[Version, bool]:
    """Version and tombstone flag of an encoded value, without copying the value."""
    hlc, flags, node_len = _HEADER.unpack_from(raw)
    start = _HEADER.size
    return Version(hlc, raw[start : start + node_len].decode()), bool(flags & _TOMBSTONE)


def record_hash(key: bytes, version: Version, tombstone: bool) -> int:
    """A 128-bit hash of a record's identity. XOR-ed into its partition's digest.

    The value is left out: a version names exactly one write, so equal versions mean equal values.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(struct.pack(">IQB", len(key), version.hlc, tombstone))
    h.update(key)
    h.update(version.node_id.encode())
    return int.from_bytes(h.digest(), "big")

"""Versioned records: what replicas store and exchange, and what a read returns.

Every stored value carries a version ``(hlc, node_id)``; the newest version wins everywhere (local
writes, replication, read repair, anti-entropy). A delete is a record with ``tombstone=True``. How a
record is laid out on disk is the storage schema's business (``kvnode.storage.schema``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from kvnode.api.v1 import types_pb2


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

"""The write operations a node sends to its storage writer process.

Each is a small picklable value: the node builds it, the writer process runs it inside its next
write transaction (:meth:`WriteOp.run`), and the result travels back once the commit is durable.
A result type per operation keeps both ends typed: ``await committer.submit(PutMeta.of(...))``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from kvnode.core.records import Record, Version
from kvnode.storage.schema import MetaKey
from kvnode.storage.writes import WriteTxn

T_co = TypeVar("T_co", covariant=True)
V = TypeVar("V")

ApplyRow = tuple[bytes, bytes, int, str, bool, bool]
"""A record as it crosses the pipe: key, value, hlc, writer id, tombstone, want previous. Plain
tuples because pickling a Record (a NamedTuple) per row costs several times as much."""
ApplyOutcome = tuple[bool, Record | None]
"""Whether the record was applied (nothing as new was stored), and the record it replaced if asked."""


class WriteOp(Generic[T_co]):
    """One operation of a write transaction; ``T_co`` is what it returns."""

    def run(self, txn: WriteTxn) -> T_co:
        raise NotImplementedError


def _row(record: Record, want_previous: bool = False) -> ApplyRow:
    version = record.version
    return (record.key, record.value, version.hlc, version.node_id, record.tombstone, want_previous)


def _record(row: ApplyRow) -> Record:
    key, value, hlc, writer, tombstone, _ = row
    return Record(key, value, Version(hlc, writer), tombstone)


@dataclass(frozen=True)
class ApplyRecords(WriteOp[list[ApplyOutcome]]):
    """Store each record unless a version at least as new is stored."""

    rows: list[ApplyRow]

    @classmethod
    def of(cls, items: Iterable[tuple[Record, bool]]) -> ApplyRecords:
        """From (record, return the previous record) pairs."""
        return cls([_row(record, want) for record, want in items])

    def run(self, txn: WriteTxn) -> list[ApplyOutcome]:
        return [txn.apply(_record(row), row[5]) for row in self.rows]


@dataclass(frozen=True)
class PutMeta(WriteOp[None]):
    """Set one meta record (already encoded: the writer knows no meta types)."""

    name: bytes
    value: bytes

    @classmethod
    def of(cls, key: MetaKey[V], value: V) -> PutMeta:
        return cls(key.key, key.encode(value))

    def run(self, txn: WriteTxn) -> None:
        txn.put_meta(self.name, self.value)


@dataclass(frozen=True)
class CollectTombstones(WriteOp[int]):
    """Remove up to ``limit`` tombstones older than ``horizon_hlc``; returns how many."""

    horizon_hlc: int
    limit: int

    def run(self, txn: WriteTxn) -> int:
        return txn.collect_tombstones(self.horizon_hlc, self.limit)


@dataclass(frozen=True)
class AddHints(WriteOp[list[int]]):
    """Keep records for a replica that missed them; returns each hint's size in bytes."""

    target: str
    rows: list[ApplyRow]
    created_ms: int

    @classmethod
    def of(cls, target: str, records: Iterable[Record], created_ms: int) -> AddHints:
        return cls(target, [_row(r) for r in records], created_ms)

    def run(self, txn: WriteTxn) -> list[int]:
        return [txn.add_hint(self.target, _record(row), self.created_ms) for row in self.rows]


@dataclass(frozen=True)
class DeleteHints(WriteOp[list[int]]):
    """Forget hints; returns the bytes each freed (0 for one already gone)."""

    ids: list[bytes]

    def run(self, txn: WriteTxn) -> list[int]:
        return [txn.delete_hint(i) for i in self.ids]

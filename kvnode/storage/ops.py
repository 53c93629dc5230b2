"""The write operations a node sends to its storage writer process.

Each is a small picklable value: the node builds it, the writer process runs it inside its next
write transaction (:meth:`WriteOp.run`), and the result travels back once the commit is durable.
A result type per operation keeps both ends typed: ``await committer.submit(PutMeta.of(...))``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from kvnode.core.errors import InvalidArgument, KVError
from kvnode.core.records import Record, Version
from kvnode.storage.schema import MAX_KEY_BYTES, MetaKey
from kvnode.storage.writes import WriteTxn

T_co = TypeVar("T_co", covariant=True)
V = TypeVar("V")

ApplyRow = tuple[bytes, bytes, int, str, bool, bool]
"""A record as it crosses the pipe: key, value, hlc, writer id, tombstone, want previous. Plain
tuples because pickling a Record (a NamedTuple) per row costs several times as much."""
ApplyOutcome = tuple[bool, Record | None]
"""Whether the record was applied (nothing as new was stored), and the record it replaced if asked."""
ApplyResult = ApplyOutcome | KVError
"""An outcome, or why this record alone was refused (the others of its batch are unaffected)."""
_MAX_WRITER_ID = 255  # the encoding keeps the writer id's length in one byte


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


def unstorable(row: ApplyRow) -> KVError | None:
    """Why no transaction could store this row (checked before the transaction touches it, so a bad
    row never leaves half its index entries behind), or None."""
    key, value, hlc, writer, _, _ = row
    fields: tuple[object, ...] = (key, value, writer)  # pickled from the node: check, do not trust
    if not (isinstance(fields[0], bytes) and isinstance(fields[1], bytes) and isinstance(fields[2], str)):
        return InvalidArgument("a record must have a bytes key and value and a text writer id")
    if not 0 < len(key) <= MAX_KEY_BYTES:
        return InvalidArgument(
            f"a key of {len(key)} bytes cannot be stored: keys are 1 to {MAX_KEY_BYTES} bytes"
        )
    if not 0 < len(writer.encode()) <= _MAX_WRITER_ID:
        return InvalidArgument(f"a writer id of {len(writer)} characters cannot be stored")
    if not isinstance(hlc, int) or not 0 <= hlc < 1 << 64:
        return InvalidArgument(f"a version of {hlc!r} cannot be stored")
    return None


@dataclass(frozen=True)
class ApplyRecords(WriteOp[list[ApplyResult]]):
    """Store each record unless a version at least as new is stored; a record that cannot be stored
    is refused alone."""

    rows: list[ApplyRow]

    @classmethod
    def of(cls, items: Iterable[tuple[Record, bool]]) -> ApplyRecords:
        """From (record, return the previous record) pairs."""
        return cls([_row(record, want) for record, want in items])

    def run(self, txn: WriteTxn) -> list[ApplyResult]:
        return [unstorable(row) or txn.apply(_record(row), row[5]) for row in self.rows]


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


@dataclass(frozen=True)
class Scrubbed(WriteOp[int]):
    """What a scrub of one partition writes: a checksum for each record stored without one
    (returns how many got one), and, when ``recount``, the partition's digest recomputed from its
    intact records, so that anti-entropy sees what a corrupt record hid."""

    partition: int
    unchecked: list[bytes]
    recount: bool

    def run(self, txn: WriteTxn) -> int:
        if self.recount:
            txn.recount(self.partition)
        return txn.add_checksums(self.unchecked)

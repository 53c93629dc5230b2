"""What one write transaction may do. Every index and digest changes in the same transaction as
its record, so a crash cannot leave them disagreeing.

Write transactions run only in the storage writer process (:mod:`kvnode.storage.writer`); the node
reaches them through the typed operations of :mod:`kvnode.storage.ops`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvnode.core.placement import partition_of
from kvnode.core.records import Record, Version
from kvnode.storage.schema import (
    decode_digest,
    decode_tomb_key,
    decode_value,
    decode_version,
    encode_digest,
    encode_hint,
    encode_value,
    hint_id,
    partition_prefix,
    pidx_key,
    record_hash,
    tomb_key,
)

# Transactions are opened with buffers=False, so every key and value they return is ``bytes``; the
# lmdb stubs cannot know that, so transactions and cursors are typed loosely.
Txn = Any
Handle = Any  # an LMDB sub-database handle


@dataclass(frozen=True)
class Databases:
    """The sub-database handles of one LMDB environment (see :mod:`kvnode.storage.schema`)."""

    data: Handle
    pidx: Handle
    digests: Handle
    tombs: Handle
    hints: Handle
    meta: Handle


class WriteTxn:
    """One write transaction; :meth:`finish` writes the partition digests it changed."""

    def __init__(self, txn: Txn, dbs: Databases, partitions: int, next_hint_seq: Callable[[], int]) -> None:
        self.txn = txn
        self._dbs = dbs
        self._partitions = partitions
        self._next_hint_seq = next_hint_seq
        self._digests: dict[int, list[int]] = {}

    def _digest(self, partition: int) -> list[int]:
        state = self._digests.get(partition)
        if state is None:
            digest, count = decode_digest(self.txn.get(partition_prefix(partition), db=self._dbs.digests))
            state = self._digests[partition] = [int.from_bytes(digest, "big"), count]
        return state

    def apply(self, rec: Record, want_previous: bool = False) -> tuple[bool, Record | None]:
        """Store ``rec`` unless a version at least as new is stored. Returns (applied, previous)."""
        dbs = self._dbs
        raw_old = self.txn.get(rec.key, db=dbs.data)
        old_version: Version | None = None
        old_tomb = False
        if raw_old is not None:
            old_version, old_tomb = decode_version(raw_old)
        previous = decode_value(rec.key, raw_old) if want_previous and raw_old is not None else None
        if old_version is not None and old_version >= rec.version:
            return False, previous
        self.txn.put(rec.key, encode_value(rec), db=dbs.data)
        partition = partition_of(rec.key, self._partitions)
        digest = self._digest(partition)
        if old_version is None:
            self.txn.put(pidx_key(partition, rec.key), b"", db=dbs.pidx)
            digest[1] += 1
        else:
            digest[0] ^= record_hash(rec.key, old_version, old_tomb)
            if old_tomb:
                self.txn.delete(tomb_key(old_version.hlc, rec.key), db=dbs.tombs)
        digest[0] ^= record_hash(rec.key, rec.version, rec.tombstone)
        if rec.tombstone:
            self.txn.put(tomb_key(rec.version.hlc, rec.key), b"", db=dbs.tombs)
        return True, previous

    def remove(self, key: bytes) -> bool:
        """Drop a record outright (tombstone collection, partition cleanup)."""
        dbs = self._dbs
        raw = self.txn.get(key, db=dbs.data)
        if raw is None:
            return False
        version, tomb = decode_version(raw)
        partition = partition_of(key, self._partitions)
        digest = self._digest(partition)
        digest[0] ^= record_hash(key, version, tomb)
        digest[1] -= 1
        self.txn.delete(key, db=dbs.data)
        self.txn.delete(pidx_key(partition, key), db=dbs.pidx)
        if tomb:
            self.txn.delete(tomb_key(version.hlc, key), db=dbs.tombs)
        return True

    def collect_tombstones(self, horizon_hlc: int, limit: int) -> int:
        """Remove up to ``limit`` tombstones older than ``horizon_hlc``."""
        doomed: list[bytes] = []
        with self.txn.cursor(db=self._dbs.tombs) as cur:
            for index_key in cur.iternext(keys=True, values=False):
                hlc, key = decode_tomb_key(index_key)
                if hlc >= horizon_hlc or len(doomed) >= limit:
                    break
                doomed.append(key)
        for key in doomed:
            self.remove(key)
        return len(doomed)

    def add_hint(self, target: str, rec: Record, created_ms: int) -> int:
        """Keep a record for ``target``; returns the hint's size in bytes."""
        key = hint_id(target, self._next_hint_seq())
        value = encode_hint(rec, created_ms)
        self.txn.put(key, value, db=self._dbs.hints)
        return len(key) + len(value)

    def delete_hint(self, key: bytes) -> int:
        """Forget a hint; returns the bytes freed (0 if it was gone)."""
        raw = self.txn.pop(key, db=self._dbs.hints)
        return 0 if raw is None else len(key) + len(raw)

    def put_meta(self, name: bytes, value: bytes) -> None:
        self.txn.put(name, value, db=self._dbs.meta)

    def finish(self) -> None:
        for partition, (digest, count) in self._digests.items():
            key = partition_prefix(partition)
            if count:
                self.txn.put(key, encode_digest(digest, count), db=self._dbs.digests)
            else:
                self.txn.delete(key, db=self._dbs.digests)
        self._digests.clear()

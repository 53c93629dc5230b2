"""What one write transaction may do. Every index and digest changes in the same transaction as
its record, so a crash cannot leave them disagreeing.

A stored record that fails its check counts as absent: any version replaces it (a repair carries
the same version as the copy it fixes). Its partition's digest, which still holds the hash the
record was written with, is then recomputed from the partition's intact records when the
transaction finishes.

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
    ChecksumError,
    decode_digest,
    decode_tomb_key,
    decode_value,
    decode_version,
    encode_digest,
    encode_hint,
    encode_value,
    has_checksum,
    hint_id,
    partition_prefix,
    pidx_key,
    pidx_record_key,
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
        self._recount: set[int] = set()  # partitions whose digest finish() recomputes

    def _digest(self, partition: int) -> list[int]:
        state = self._digests.get(partition)
        if state is None:
            digest, count = decode_digest(self.txn.get(partition_prefix(partition), db=self._dbs.digests))
            state = self._digests[partition] = [int.from_bytes(digest, "big"), count]
        return state

    def _stored(self, key: bytes, partition: int) -> tuple[bytes | None, Version | None, bool]:
        """(raw, version, tombstone) of the stored record; a corrupt one counts as absent (its
        version cannot be trusted) and has its partition's digest recomputed."""
        raw = self.txn.get(key, db=self._dbs.data)
        if raw is None:
            return None, None, False
        try:
            version, tomb = decode_version(key, raw)
        except ChecksumError:
            self._recount.add(partition)
            return None, None, False
        return raw, version, tomb

    def apply(self, rec: Record, want_previous: bool = False) -> tuple[bool, Record | None]:
        """Store ``rec`` unless a version at least as new is stored. Returns (applied, previous):
        applied is False only when a newer version is stored (``rec`` was superseded)."""
        dbs = self._dbs
        partition = partition_of(rec.key, self._partitions)
        raw_old, old_version, old_tomb = self._stored(rec.key, partition)
        previous = decode_value(rec.key, raw_old) if want_previous and raw_old is not None else None
        if old_version is not None and old_version >= rec.version:
            return old_version == rec.version, previous  # holding this very record counts as stored
        self.txn.put(rec.key, encode_value(rec), db=dbs.data)
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
        partition = partition_of(key, self._partitions)
        if self.txn.get(key, db=dbs.data) is None:
            return False
        _, version, tomb = self._stored(key, partition)
        if version is not None:  # else corrupt: finish() recomputes the digest
            digest = self._digest(partition)
            digest[0] ^= record_hash(key, version, tomb)
            digest[1] -= 1
            if tomb:
                self.txn.delete(tomb_key(version.hlc, key), db=dbs.tombs)
        self.txn.delete(key, db=dbs.data)
        self.txn.delete(pidx_key(partition, key), db=dbs.pidx)
        return True

    def collect_tombstones(self, horizon_hlc: int, limit: int) -> int:
        """Remove up to ``limit`` tombstones older than ``horizon_hlc``. An index entry whose record
        is no longer that tombstone (a repair replaced a corrupt copy) is dropped alone."""
        doomed: list[tuple[bytes, int, bytes]] = []
        with self.txn.cursor(db=self._dbs.tombs) as cur:
            for index_key in cur.iternext(keys=True, values=False):
                hlc, key = decode_tomb_key(index_key)
                if hlc >= horizon_hlc or len(doomed) >= limit:
                    break
                doomed.append((index_key, hlc, key))
        for index_key, hlc, key in doomed:
            _, version, tomb = self._stored(key, partition_of(key, self._partitions))
            if tomb and version is not None and version.hlc == hlc:
                self.remove(key)
            else:
                self.txn.delete(index_key, db=self._dbs.tombs)
        return len(doomed)

    def add_checksums(self, keys: list[bytes]) -> int:
        """Rewrite records stored without a checksum with one (the scrub upgrades old stores).
        Their identity is unchanged, and so are the indexes and digests. Returns how many."""
        done = 0
        for key in keys:
            raw = self.txn.get(key, db=self._dbs.data)
            if raw is None or has_checksum(raw):
                continue
            try:
                record = decode_value(key, raw)
            except ChecksumError:
                continue  # damaged: the scrub repairs it from a replica instead
            self.txn.put(key, encode_value(record), db=self._dbs.data)
            done += 1
        return done

    def recount(self, partition: int) -> None:
        """Recompute the partition's digest from its intact records when the transaction finishes
        (the scrub found that it disagrees with them)."""
        self._recount.add(partition)

    def _recompute(self, partition: int) -> list[int]:
        """[digest, count] of a partition's intact records. Index entries whose record is gone are
        dropped; corrupt records keep theirs, so that the scrub finds them again."""
        prefix = partition_prefix(partition)
        digest = count = 0
        dangling: list[bytes] = []
        with self.txn.cursor(db=self._dbs.pidx) as cur:
            found = cur.set_range(prefix)
            while found and (index_key := cur.key()).startswith(prefix):
                key = pidx_record_key(index_key)
                raw = self.txn.get(key, db=self._dbs.data)
                if raw is None:
                    dangling.append(index_key)
                else:
                    try:
                        version, tomb = decode_version(key, raw)
                    except ChecksumError:
                        pass
                    else:
                        digest ^= record_hash(key, version, tomb)
                        count += 1
                found = cur.next()
        for index_key in dangling:
            self.txn.delete(index_key, db=self._dbs.pidx)
        return [digest, count]

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
        for partition in self._recount:
            self._digests[partition] = self._recompute(partition)
        self._recount.clear()
        for partition, (digest, count) in self._digests.items():
            key = partition_prefix(partition)
            if count:
                self.txn.put(key, encode_digest(digest, count), db=self._dbs.digests)
            else:
                self.txn.delete(key, db=self._dbs.digests)
        self._digests.clear()

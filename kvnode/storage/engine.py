"""LMDB storage: versioned records plus the indexes replication needs.

Sub-databases:

- ``data``    key -> version, tombstone flag, value (see ``kvnode.record``)
- ``pidx``    partition (2 bytes) + key -> ""    every record, by partition, for streaming
- ``digests`` partition -> XOR of record hashes (16 bytes) + record count (8 bytes)
- ``tombs``   hlc (8 bytes) + key -> ""          tombstones by age, for garbage collection
- ``hints``   target node + NUL + sequence -> created ms, key, encoded record
- ``meta``    name -> bytes (node id, clock high-water mark, membership, ...)

Writes go through :meth:`Storage.write`, one LMDB write transaction with a synchronous commit;
the group committer batches many requests into one call. Reads use short read-only transactions
and never wait for writers. Every index and digest changes in the same transaction as the record,
so a crash cannot leave them disagreeing.
"""

from __future__ import annotations

import logging
import shutil
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from kvnode.core.errors import StorageError, StorageFull
from kvnode.core.placement import partition_of
from kvnode.core.records import MESSAGE_BUDGET, Record, Version
from kvnode.storage.schema import (
    Hint,
    decode_value,
    decode_version,
    encode_value,
    hint_prefix,
    pidx_key,
    record_hash,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
# Transactions are opened with buffers=False, so every key and value they return is ``bytes``; the
# lmdb stubs cannot know that, so transactions and cursors are typed loosely here.
Txn = Any
ApplyRow = tuple[bytes, bytes, int, str, bool, bool]  # key, value, hlc, writer id, tombstone, want previous


def apply_row(record: Record, want_previous: bool) -> ApplyRow:
    return (
        record.key,
        record.value,
        record.version.hlc,
        record.version.node_id,
        record.tombstone,
        want_previous,
    )


_PART = struct.Struct(">H")
_DIGEST = struct.Struct(">16sQ")
_HLC = struct.Struct(">Q")
_HINT_HEAD = struct.Struct(">QI")  # created ms, key length
_EMPTY_DIGEST = bytes(16)
_LOW_DISK_BYTES = 8 * 1024 * 1024


class RWGate:
    """Many readers or one map resize. LMDB must not remap while a read transaction is open."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._resizing = False

    def enter_shared(self) -> None:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._readers += 1

    def leave_shared(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._resizing = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


@dataclass(frozen=True)
class StorageStats:
    records: int
    tombstones: int
    used_bytes: int
    map_size: int

    @property
    def keys(self) -> int:
        return self.records - self.tombstones


class _Reading:
    """A read transaction inside the gate, taking up a map the writer process grew first. A class,
    not a generator context manager: every Get goes through it, and this is measurably cheaper."""

    __slots__ = ("_storage", "_txn")

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def __enter__(self) -> Txn:
        s = self._storage
        while True:
            s._gate.enter_shared()
            try:
                txn = s._begin_read()
            except BaseException:
                s._gate.leave_shared()
                raise
            if txn is not None:
                self._txn = txn
                return txn
            s._gate.leave_shared()
            s._adopt_map_size()

    def __exit__(self, *exc: object) -> None:
        try:
            self._txn.abort()
        finally:
            self._storage._gate.leave_shared()


class WriteTxn:
    """The operations allowed inside one write transaction."""

    def __init__(self, storage: Storage, txn: Txn) -> None:
        self._s = storage
        self.txn = txn
        self._digests: dict[int, list[int]] = {}

    def _digest(self, partition: int) -> list[int]:
        state = self._digests.get(partition)
        if state is None:
            raw = self.txn.get(_PART.pack(partition), db=self._s.digests_db)
            digest, count = _DIGEST.unpack(raw) if raw else (_EMPTY_DIGEST, 0)
            state = self._digests[partition] = [int.from_bytes(digest, "big"), count]
        return state

    def apply_rows(self, rows: list[ApplyRow]) -> list[tuple[bool, Record | None]]:
        """:meth:`apply` for each row. Rows are plain tuples because they cross the pipe to the
        writer process: pickling a Record (a NamedTuple) costs about seven times as much."""
        return [
            self.apply(Record(k, v, Version(hlc, writer), tomb), want)
            for k, v, hlc, writer, tomb, want in rows
        ]

    def apply(self, rec: Record, want_previous: bool = False) -> tuple[bool, Record | None]:
        """Store ``rec`` unless a version at least as new is stored. Returns (applied, previous)."""
        s = self._s
        raw_old = self.txn.get(rec.key, db=s.data_db)
        old_version: Version | None = None
        old_tomb = False
        if raw_old is not None:
            old_version, old_tomb = decode_version(raw_old)
        previous = decode_value(rec.key, raw_old) if want_previous and raw_old is not None else None
        if old_version is not None and old_version >= rec.version:
            return False, previous
        self.txn.put(rec.key, encode_value(rec), db=s.data_db)
        partition = partition_of(rec.key, s.partitions)
        digest = self._digest(partition)
        if old_version is None:
            self.txn.put(pidx_key(partition, rec.key), b"", db=s.pidx_db)
            digest[1] += 1
        else:
            digest[0] ^= record_hash(rec.key, old_version, old_tomb)
            if old_tomb:
                self.txn.delete(_HLC.pack(old_version.hlc) + rec.key, db=s.tombs_db)
        digest[0] ^= record_hash(rec.key, rec.version, rec.tombstone)
        if rec.tombstone:
            self.txn.put(_HLC.pack(rec.version.hlc) + rec.key, b"", db=s.tombs_db)
        return True, previous

    def remove(self, key: bytes) -> bool:
        """Drop a record outright (tombstone collection, partition cleanup)."""
        s = self._s
        raw = self.txn.get(key, db=s.data_db)
        if raw is None:
            return False
        version, tomb = decode_version(raw)
        partition = partition_of(key, s.partitions)
        digest = self._digest(partition)
        digest[0] ^= record_hash(key, version, tomb)
        digest[1] -= 1
        self.txn.delete(key, db=s.data_db)
        self.txn.delete(pidx_key(partition, key), db=s.pidx_db)
        if tomb:
            self.txn.delete(_HLC.pack(version.hlc) + key, db=s.tombs_db)
        return True

    def collect_tombstones(self, horizon_hlc: int, limit: int) -> int:
        """Remove up to ``limit`` tombstones older than ``horizon_hlc``."""
        doomed: list[bytes] = []
        with self.txn.cursor(db=self._s.tombs_db) as cur:
            for index_key in cur.iternext(keys=True, values=False):
                if _HLC.unpack_from(index_key)[0] >= horizon_hlc or len(doomed) >= limit:
                    break
                doomed.append(index_key)
        for index_key in doomed:
            self.remove(index_key[_HLC.size :])
        return len(doomed)

    def add_hint(self, target: str, rec: Record, created_ms: int) -> tuple[bytes, int]:
        """Keep a record for ``target``; returns the hint id and its size in bytes."""
        hint_id = hint_prefix(target) + self._s.next_hint_seq().to_bytes(8, "big")
        value = _HINT_HEAD.pack(created_ms, len(rec.key)) + rec.key + encode_value(rec)
        self.txn.put(hint_id, value, db=self._s.hints_db)
        return hint_id, len(hint_id) + len(value)

    def add_hints(self, target: str, records: list[Record], created_ms: int) -> list[int]:
        """Keep each record for ``target``; returns their sizes in bytes."""
        return [self.add_hint(target, rec, created_ms)[1] for rec in records]

    def delete_hints(self, hint_ids: list[bytes]) -> list[int]:
        """Forget hints; returns the bytes each freed (0 for one already gone)."""
        return [self.delete_hint(i) for i in hint_ids]

    def delete_hint(self, hint_id: bytes) -> int:
        """Forget a hint; returns the bytes freed (0 if it was gone)."""
        raw = self.txn.pop(hint_id, db=self._s.hints_db)
        return 0 if raw is None else len(hint_id) + len(raw)

    def put_meta(self, name: str, value: bytes) -> None:
        self.txn.put(name.encode(), value, db=self._s.meta_db)

    def finish(self) -> None:
        for partition, (digest, count) in self._digests.items():
            key = _PART.pack(partition)
            if count:
                self.txn.put(key, _DIGEST.pack(digest.to_bytes(16, "big"), count), db=self._s.digests_db)
            else:
                self.txn.delete(key, db=self._s.digests_db)
        self._digests.clear()


class Storage:
    """An LMDB environment holding one node's data. Thread-safe: one writer thread, any readers."""

    def __init__(
        self,
        path: Path,
        *,
        partitions: int,
        map_size: int,
        max_map_size: int = 0,
    ) -> None:
        self.path = path
        self.partitions = partitions
        self.max_map_size = max_map_size
        path.mkdir(parents=True, exist_ok=True)
        try:
            self.env = lmdb.open(
                str(path),
                map_size=map_size if not max_map_size else min(map_size, max_map_size),
                max_dbs=8,
                max_readers=256,
                sync=True,
                metasync=True,
                readahead=False,
            )
            self.data_db = self.env.open_db(b"data")
            self.pidx_db = self.env.open_db(b"pidx")
            self.digests_db = self.env.open_db(b"digests")
            self.tombs_db = self.env.open_db(b"tombs")
            self.hints_db = self.env.open_db(b"hints")
            self.meta_db = self.env.open_db(b"meta")
        except lmdb.Error as exc:
            raise StorageError(f"cannot open the LMDB store at {path}: {exc}") from exc
        self._gate = RWGate()
        self._hint_seq = self._last_hint_seq()
        self._hint_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._gate.exclusive():
            self.env.close()

    # -- writes ------------------------------------------------------------------------------

    def write(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` in one write transaction and commit it durably (fsync) before returning.

        The map grows when it fills. Raises StorageFull when the disk, or --max-map-size, is full;
        nothing committed before is affected.
        """
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    wtxn = WriteTxn(self, txn)
                    result = fn(wtxn)
                    wtxn.finish()
                return result
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as exc:
                raise self._classify(exc) from exc

    def _grow(self) -> None:
        current = self.map_size()
        limit = self.max_map_size or current * 2
        if current >= limit:
            raise StorageFull(
                f"storage is full: the LMDB map reached its maximum size of {current} bytes "
                "(--max-map-size); delete data or raise the limit"
            )
        new_size = min(limit, current * 2)
        with self._gate.exclusive():
            self.env.set_mapsize(new_size)
        log.info("LMDB map grown from %d to %d bytes", current, new_size)

    def _classify(self, exc: lmdb.Error) -> Exception:
        free = shutil.disk_usage(self.path).free
        text = str(exc)
        if free < _LOW_DISK_BYTES or "No space" in text:
            return StorageFull(
                f"disk full: only {free} bytes free on the data volume at {self.path}; "
                "the write was not stored and earlier data is intact"
            )
        return StorageError(f"storage error: {text}")

    # -- reads -------------------------------------------------------------------------------

    def reading(self) -> _Reading:
        """``with storage.reading() as txn``: a read-only transaction; keep it short (never
        across an await)."""
        return _Reading(self)

    def _begin_read(self) -> Txn | None:
        try:
            return self.env.begin(buffers=False)
        except lmdb.MapResizedError:  # the writer process grew the map
            return None

    def _adopt_map_size(self) -> None:
        with self._gate.exclusive():
            self.env.set_mapsize(0)

    def map_size(self) -> int:
        return int(self.env.info()["map_size"])

    def get(self, key: bytes) -> Record | None:
        with self.reading() as txn:
            raw = txn.get(key, db=self.data_db)
        return None if raw is None else decode_value(key, raw)

    def get_many(self, keys: list[bytes]) -> list[Record | None]:
        with self.reading() as txn:
            raws = [txn.get(k, db=self.data_db) for k in keys]
        return [None if raw is None else decode_value(k, raw) for k, raw in zip(keys, raws, strict=True)]

    def scan(
        self,
        start: bytes,
        end: bytes,
        prefix: bytes,
        limit: int,
        keys_only: bool = False,
        max_bytes: int = MESSAGE_BUDGET,
    ) -> tuple[list[Record], bool]:
        """Records (tombstones included) in [max(start, prefix), end) with the prefix, in key order,
        at most ``limit`` of them and about ``max_bytes``, so that a page fits one message.

        Returns (records, exhausted): exhausted is True when nothing follows in the range.
        """
        first = max(start, prefix)
        out: list[Record] = []
        size = 0
        with self.reading() as txn, txn.cursor(db=self.data_db) as cur:
            if not cur.set_range(first):
                return out, True
            for key, raw in cur.iternext():
                if (end and key >= end) or not key.startswith(prefix):
                    return out, True
                if len(out) >= limit or (out and size + len(key) + len(raw) > max_bytes):
                    return out, False
                rec = decode_value(key, raw)
                out.append(rec._replace(value=b"") if keys_only else rec)
                size += len(key) + (0 if keys_only else len(raw))
        return out, True

    def digests(self, partitions: list[int] | None = None) -> list[tuple[int, bytes, int]]:
        """(partition, digest, records) for the given partitions, or for every non-empty one."""
        with self.reading() as txn:
            if partitions is None:
                return [
                    (_PART.unpack(k)[0], *_DIGEST.unpack(v))
                    for k, v in txn.cursor(db=self.digests_db).iternext()
                ]
            out = []
            for p in partitions:
                raw = txn.get(_PART.pack(p), db=self.digests_db)
                digest, count = _DIGEST.unpack(raw) if raw else (_EMPTY_DIGEST, 0)
                out.append((p, digest, count))
            return out

    def _partition_page(
        self, partition: int, after: bytes, limit: int, decode: Callable[[bytes, bytes], T]
    ) -> tuple[list[T], bool]:
        prefix = _PART.pack(partition)
        out: list[T] = []
        size = 0
        with self.reading() as txn, txn.cursor(db=self.pidx_db) as cur:
            found = cur.set_range(prefix + after)
            if found and after and cur.key() == prefix + after:
                found = cur.next()
            while found:
                index_key = cur.key()
                if not index_key.startswith(prefix):
                    return out, True
                if len(out) >= limit or size > MESSAGE_BUDGET:
                    return out, False
                key = index_key[_PART.size :]
                raw = txn.get(key, db=self.data_db)
                if raw is not None:
                    out.append(decode(key, raw))
                    size += len(key) + len(raw)
                found = cur.next()
        return out, True

    def key_versions(
        self, partition: int, after: bytes, limit: int
    ) -> tuple[list[tuple[bytes, Version, bool]], bool]:
        """A page of (key, version, tombstone) for one partition, in key order after ``after``."""
        return self._partition_page(partition, after, limit, lambda key, raw: (key, *decode_version(raw)))

    def fetch_partition(self, partition: int, after: bytes, limit: int) -> tuple[list[Record], bool]:
        """A page of one partition's records, in key order after ``after``."""
        return self._partition_page(partition, after, limit, decode_value)

    def stats(self) -> StorageStats:
        with self.reading() as txn:
            records = txn.stat(self.data_db)["entries"]
            tombstones = txn.stat(self.tombs_db)["entries"]
        info = self.env.info()
        used = (info["last_pgno"] + 1) * self.env.stat()["psize"]
        return StorageStats(records, tombstones, used, info["map_size"])

    def get_meta(self, name: str) -> bytes | None:
        with self.reading() as txn:
            value: bytes | None = txn.get(name.encode(), db=self.meta_db)
        return value

    # -- hints -------------------------------------------------------------------------------

    def _last_hint_seq(self) -> int:
        last = 0
        with self.reading() as txn:
            for key in txn.cursor(db=self.hints_db).iternext(keys=True, values=False):
                last = max(last, int.from_bytes(key[-8:], "big"))
        return last

    def next_hint_seq(self) -> int:
        with self._hint_lock:
            self._hint_seq += 1
            return self._hint_seq

    def hints(self, target: str | None = None, limit: int = 1 << 62) -> list[Hint]:
        """Stored hints, oldest first within a target."""
        prefix = b"" if target is None else hint_prefix(target)
        out: list[Hint] = []
        with self.reading() as txn, txn.cursor(db=self.hints_db) as cur:
            if not cur.set_range(prefix):
                return out
            for hint_id, raw in cur.iternext():
                if not hint_id.startswith(prefix) or len(out) >= limit:
                    break
                created_ms, key_len = _HINT_HEAD.unpack_from(raw)
                key = raw[_HINT_HEAD.size : _HINT_HEAD.size + key_len]
                rec = decode_value(key, raw[_HINT_HEAD.size + key_len :])
                target_id = hint_id[: hint_id.index(b"\x00")].decode()
                out.append(Hint(hint_id, target_id, created_ms, rec))
        return out

    def hint_totals(self) -> dict[str, tuple[int, int]]:
        """Per target: (hints, bytes)."""
        totals: dict[str, list[int]] = {}
        with self.reading() as txn:
            for hint_id, raw in txn.cursor(db=self.hints_db).iternext():
                target = hint_id[: hint_id.index(b"\x00")].decode()
                entry = totals.setdefault(target, [0, 0])
                entry[0] += 1
                entry[1] += len(hint_id) + len(raw)
        return {t: (n, b) for t, (n, b) in totals.items()}

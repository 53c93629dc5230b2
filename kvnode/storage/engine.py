"""A node's LMDB store: opening it, its transactions, map growth, and every read.

The layout of the bytes is :mod:`kvnode.storage.schema`'s; what a write transaction may do is
:mod:`kvnode.storage.writes`'s. Writes go through :meth:`Storage.write`, one LMDB write transaction
with a synchronous commit, which only the storage writer process calls. Reads use short read-only
transactions and never wait for writers.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import lmdb

from kvnode.core.errors import InvalidArgument, StorageError, StorageFull
from kvnode.core.records import MESSAGE_BUDGET, Record, Version
from kvnode.storage.gate import RWGate
from kvnode.storage.lmdbfile import check_data_file
from kvnode.storage.schema import (
    DATA,
    DIGESTS,
    HINTS,
    META,
    PIDX,
    TOMBS,
    ChecksumError,
    Corrupt,
    Hint,
    MetaKey,
    decode_digest,
    decode_hint,
    decode_value,
    decode_version,
    encode_digest,
    has_checksum,
    hint_prefix,
    hint_sequence,
    hint_target,
    partition_of_digest_key,
    partition_prefix,
    pidx_record_key,
    record_hash,
)
from kvnode.storage.writes import Databases, Txn, WriteTxn

log = logging.getLogger(__name__)

T = TypeVar("T")
_LOW_DISK_BYTES = 8 * 1024 * 1024
_PAGE_DAMAGE = (lmdb.CorruptedError, lmdb.PageNotFoundError)
"""LMDB's own findings of damaged pages: a read that meets one reports its keys as corrupt."""

CorruptionSink = Callable[[Corrupt, str], None]
"""Told of every record a read finds corrupt, and which read (``read``, ``scan``, ...) found it."""


def _ignore(corrupt: Corrupt, where: str) -> None:
    pass


@dataclass(frozen=True)
class StorageStats:
    records: int
    tombstones: int
    used_bytes: int
    map_size: int

    @property
    def keys(self) -> int:
        return self.records - self.tombstones


@dataclass(frozen=True)
class PartitionCheck:
    """One partition as a scrub finds it, read in one transaction."""

    partition: int
    checked: int
    """Records read and checked."""
    corrupt: list[bytes]
    """Keys whose record failed its check, or that the partition index names but ``data`` lacks."""
    unchecked: list[bytes]
    """Keys whose record has no checksum yet (written before checksums)."""
    digest_ok: bool
    """Whether the stored digest is that of the intact records: if not, anti-entropy must not trust
    it (a corrupt record hides behind the digest it was written with)."""


class OverBudget(InvalidArgument):
    """A read whose records add up to more bytes than its caller can take."""

    PHRASE = "bytes this read may carry"  # how a peer's refusal is recognised across the wire

    def __init__(self, size: int, budget: int) -> None:
        super().__init__(f"the records asked for add up to {size} bytes, over the {budget} {self.PHRASE}")
        self.size = size
        self.budget = budget


class _Reading:
    """A read transaction inside the gate, taking up a map the writer process grew first. A class,
    not a generator context manager: every Get goes through it, and this is measurably cheaper."""

    __slots__ = ("_buffers", "_storage", "_txn")

    def __init__(self, storage: Storage, buffers: bool = False) -> None:
        self._storage = storage
        self._buffers = buffers

    def __enter__(self) -> Txn:
        s = self._storage
        while True:
            s._gate.enter_shared()
            try:
                txn = s._begin_read(self._buffers)
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


class Storage:
    """An LMDB environment holding one node's data. Thread-safe: one writer, any readers."""

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
        check_data_file(path)  # before LMDB maps it: a truncated file would be a SIGBUS
        self._on_corrupt: CorruptionSink = _ignore
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
            open_db = self.env.open_db
            self.dbs = Databases(
                open_db(DATA), open_db(PIDX), open_db(DIGESTS), open_db(TOMBS), open_db(HINTS), open_db(META)
            )
        except lmdb.Error as exc:
            raise StorageError(f"cannot open the LMDB store at {path}: {exc}") from exc
        self._gate = RWGate()
        self._hint_seq = self._last_hint_seq()
        self._hint_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._gate.exclusive():
            self.env.close()

    def copy_to(self, folder: Path) -> None:
        """A consistent, compacted copy of the whole store in ``folder`` (LMDB takes it inside one
        read transaction, so writes go on meanwhile). Blocking: run it in a thread."""
        with self.reading():
            self.env.copy(str(folder), compact=True)

    # -- writes ------------------------------------------------------------------------------

    def write(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` in one write transaction and commit it durably (fsync) before returning.

        The map grows when it fills. Raises StorageFull when the disk, or --max-map-size, is full;
        nothing committed before is affected.
        """
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    wtxn = WriteTxn(txn, self.dbs, self.partitions, self.next_hint_seq)
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

    def _begin_read(self, buffers: bool = False) -> Txn | None:
        try:
            return self.env.begin(buffers=True) if buffers else self.env.begin(buffers=False)
        except lmdb.MapResizedError:  # the writer process grew the map
            return None

    def _adopt_map_size(self) -> None:
        with self._gate.exclusive():
            self.env.set_mapsize(0)

    def map_size(self) -> int:
        return int(self.env.info()["map_size"])

    def report_corruption(self, sink: CorruptionSink) -> None:
        """Tell ``sink`` of every corrupt record a read meets (the node counts, logs and repairs)."""
        self._on_corrupt = sink

    def found_corrupt(self, key: bytes, reason: str, where: str) -> Corrupt:
        """Report a record that failed its check where it was found (a backup's copy of this
        store, say): the node counts, logs and repairs it."""
        corrupt = Corrupt(key, reason)
        self._on_corrupt(corrupt, where)
        return corrupt

    def get(self, key: bytes) -> Record | Corrupt | None:
        return self.get_many([key])[0]

    def get_many(self, keys: list[bytes], max_bytes: int | None = None) -> list[Record | Corrupt | None]:
        """Each key's record; a record that fails its check comes back as :class:`Corrupt`. With
        ``max_bytes``, records that add up to more are refused before any is copied out."""
        try:
            if max_bytes is None:
                with self.reading() as txn:
                    raws = [txn.get(k, db=self.dbs.data) for k in keys]
            else:
                raws = self._get_within(keys, max_bytes)
        except _PAGE_DAMAGE:
            return [self._get_alone(k) for k in keys]
        out: list[Record | Corrupt | None] = []
        for key, raw in zip(keys, raws, strict=True):
            if raw is None:
                out.append(None)
                continue
            try:
                out.append(decode_value(key, raw))
            except ChecksumError as exc:
                out.append(self.found_corrupt(key, exc.reason, "read"))
        return out

    def _get_within(self, keys: list[bytes], max_bytes: int) -> list[bytes | None]:
        with _Reading(self, buffers=True) as txn:  # views into the map: sizes cost no copy
            views = [txn.get(k, db=self.dbs.data) for k in keys]
            size = sum(len(v) for v in views if v is not None)
            if size > max_bytes:
                raise OverBudget(size, max_bytes)
            return [None if v is None else bytes(v) for v in views]

    def _get_alone(self, key: bytes) -> Record | Corrupt | None:
        """One key in a transaction of its own, after a damaged page failed a batch."""
        try:
            with self.reading() as txn:
                raw = txn.get(key, db=self.dbs.data)
            return None if raw is None else decode_value(key, raw)
        except _PAGE_DAMAGE as exc:
            return self.found_corrupt(key, f"damaged LMDB page: {exc}", "read")
        except ChecksumError as exc:
            return self.found_corrupt(key, exc.reason, "read")

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

        Returns (records, exhausted): exhausted is True when nothing follows in the range. A record
        that fails its check is left out and reported (see :meth:`report_corruption`).
        """
        first = max(start, prefix)
        out: list[Record] = []
        size = 0
        with self.reading() as txn, txn.cursor(db=self.dbs.data) as cur:
            if not cur.set_range(first):
                return out, True
            for key, raw in cur.iternext():
                if (end and key >= end) or not key.startswith(prefix):
                    return out, True
                if len(out) >= limit or (out and size + len(key) + len(raw) > max_bytes):
                    return out, False
                try:
                    rec = decode_value(key, raw)
                except ChecksumError as exc:
                    self.found_corrupt(key, exc.reason, "scan")
                    continue
                out.append(rec._replace(value=b"") if keys_only else rec)
                size += len(key) + (0 if keys_only else len(raw))
        return out, True

    def digests(self, partitions: list[int] | None = None) -> list[tuple[int, bytes, int]]:
        """(partition, digest, records) for the given partitions, or for every non-empty one."""
        with self.reading() as txn:
            if partitions is None:
                return [
                    (partition_of_digest_key(k), *decode_digest(v))
                    for k, v in txn.cursor(db=self.dbs.digests).iternext()
                ]
            raws = [txn.get(partition_prefix(p), db=self.dbs.digests) for p in partitions]
        return [(p, *decode_digest(raw)) for p, raw in zip(partitions, raws, strict=True)]

    def _partition_page(
        self, partition: int, after: bytes, limit: int, decode: Callable[[bytes, bytes], T], where: str
    ) -> tuple[list[T], bool]:
        """A page of one partition; records that fail their check are left out and reported."""
        prefix = partition_prefix(partition)
        out: list[T] = []
        size = 0
        with self.reading() as txn, txn.cursor(db=self.dbs.pidx) as cur:
            found = cur.set_range(prefix + after)
            if found and after and cur.key() == prefix + after:
                found = cur.next()
            while found:
                index_key = cur.key()
                if not index_key.startswith(prefix):
                    return out, True
                if len(out) >= limit or size > MESSAGE_BUDGET:
                    return out, False
                key = pidx_record_key(index_key)
                raw = txn.get(key, db=self.dbs.data)
                if raw is not None:
                    try:
                        out.append(decode(key, raw))
                        size += len(key) + len(raw)
                    except ChecksumError as exc:
                        self.found_corrupt(key, exc.reason, where)
                found = cur.next()
        return out, True

    def key_versions(
        self, partition: int, after: bytes, limit: int
    ) -> tuple[list[tuple[bytes, Version, bool]], bool]:
        """A page of (key, version, tombstone) for one partition, in key order after ``after``. A
        corrupt record is left out, so that anti-entropy finds its key missing and copies it back."""
        return self._partition_page(
            partition, after, limit, lambda key, raw: (key, *decode_version(key, raw)), "key_versions"
        )

    def fetch_partition(self, partition: int, after: bytes, limit: int) -> tuple[list[Record], bool]:
        """A page of one partition's records, in key order after ``after``; corrupt ones left out."""
        return self._partition_page(partition, after, limit, decode_value, "fetch")

    def check_partition(self, partition: int) -> PartitionCheck:
        """Read and check every record of a partition in one transaction, and the digest stored
        for it against the digest of its intact records (the scrub; blocking: run it in a thread).
        Corrupt records found are reported (``scrub``) as well as returned."""
        prefix = partition_prefix(partition)
        corrupt: list[bytes] = []
        unchecked: list[bytes] = []
        digest = count = checked = 0
        with self.reading() as txn, txn.cursor(db=self.dbs.pidx) as cur:
            stored = txn.get(prefix, db=self.dbs.digests)
            found = cur.set_range(prefix)
            while found and (index_key := cur.key()).startswith(prefix):
                key = pidx_record_key(index_key)
                raw = txn.get(key, db=self.dbs.data)
                checked += 1
                try:
                    if raw is None:
                        raise ChecksumError(key, "indexed but missing")
                    version, tomb = decode_version(key, raw)
                except ChecksumError as exc:
                    self.found_corrupt(key, exc.reason, "scrub")
                    corrupt.append(key)
                else:
                    digest ^= record_hash(key, version, tomb)
                    count += 1
                    if not has_checksum(raw):
                        unchecked.append(key)
                found = cur.next()
        expected = encode_digest(digest, count) if count else None
        return PartitionCheck(partition, checked, corrupt, unchecked, stored == expected)

    def stats(self) -> StorageStats:
        with self.reading() as txn:
            records = txn.stat(self.dbs.data)["entries"]
            tombstones = txn.stat(self.dbs.tombs)["entries"]
        info = self.env.info()
        used = (info["last_pgno"] + 1) * self.env.stat()["psize"]
        return StorageStats(records, tombstones, used, info["map_size"])

    def get_meta(self, key: MetaKey[T]) -> T | None:
        with self.reading() as txn:
            raw: bytes | None = txn.get(key.key, db=self.dbs.meta)
        return None if raw is None else key.decode(raw)

    # -- hints -------------------------------------------------------------------------------

    def _last_hint_seq(self) -> int:
        last = 0
        with self.reading() as txn:
            for key in txn.cursor(db=self.dbs.hints).iternext(keys=True, values=False):
                last = max(last, hint_sequence(key))
        return last

    def next_hint_seq(self) -> int:
        with self._hint_lock:
            self._hint_seq += 1
            return self._hint_seq

    def hints(self, target: str | None = None, limit: int = 1 << 62) -> list[Hint]:
        """Stored hints, oldest first within a target."""
        prefix = b"" if target is None else hint_prefix(target)
        out: list[Hint] = []
        with self.reading() as txn, txn.cursor(db=self.dbs.hints) as cur:
            if not cur.set_range(prefix):
                return out
            for hint_id, raw in cur.iternext():
                if not hint_id.startswith(prefix) or len(out) >= limit:
                    break
                try:
                    out.append(decode_hint(hint_id, raw))
                except ChecksumError as exc:
                    self.found_corrupt(exc.key, exc.reason, "hint")
                    out.append(Hint(hint_id, hint_target(hint_id), 0, None))
        return out

    def hint_totals(self) -> dict[str, tuple[int, int]]:
        """Per target: (hints, bytes)."""
        totals: dict[str, list[int]] = {}
        with self.reading() as txn:
            for hint_id, raw in txn.cursor(db=self.dbs.hints).iternext():
                target = hint_target(hint_id)
                entry = totals.setdefault(target, [0, 0])
                entry[0] += 1
                entry[1] += len(hint_id) + len(raw)
        return {t: (n, b) for t, (n, b) in totals.items()}

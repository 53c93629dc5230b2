"""The on-disk schema of a node's LMDB store: sub-databases, key layouts, value encodings and the
meta records. Everything that reads or writes the store's bytes goes through here.

Sub-databases:

- ``data``    key -> version, tombstone flag, checksum, value (:func:`encode_value`)
- ``pidx``    partition (2 bytes) + key -> ""    every record, by partition, for streaming
- ``digests`` partition -> XOR of record hashes (16 bytes) + record count (8 bytes)
- ``tombs``   hlc (8 bytes) + key -> ""          tombstones by age, for garbage collection
- ``hints``   target node + NUL + sequence -> created ms, key, encoded record
- ``meta``    name -> bytes: the typed records of :class:`Meta`
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from kvnode.api.v1 import types_pb2
from kvnode.core.membership import Membership
from kvnode.core.records import Record, Version

T = TypeVar("T")

DATA = b"data"
PIDX = b"pidx"
DIGESTS = b"digests"
TOMBS = b"tombs"
HINTS = b"hints"
META = b"meta"
SUBDATABASES = (DATA, PIDX, DIGESTS, TOMBS, HINTS, META)

_HEADER = struct.Struct(">QBB")  # hlc, flags, len(node_id)
_CHECK = struct.Struct(">BI")  # marker, CRC32: present when flags has _CHECKSUM
_CHECKED = _HEADER.size + _CHECK.size  # where a checksummed record's writer id starts
_TOMBSTONE = 0x01
_CHECKSUM = 0x02
_MARKER = 0xFF  # never the first byte of UTF-8 text: see decode_value
_PART = struct.Struct(">H")
_DIGEST = struct.Struct(">16sQ")
_HLC = struct.Struct(">Q")
_U64 = struct.Struct(">Q")
_HINT_HEAD = struct.Struct(">QI")  # created ms, key length
_HINT_SEQ = 8
EMPTY_DIGEST = bytes(16)

LMDB_MAX_KEY_BYTES = 511
"""The longest key LMDB holds (its compile-time MDB_MAXKEYSIZE; ``Environment.max_key_size()``)."""
MAX_KEY_BYTES = LMDB_MAX_KEY_BYTES - _HLC.size
"""The longest record key every sub-database can hold: ``tombs`` prefixes the key with 8 bytes of
clock, the most any index adds (``pidx`` adds 2)."""

# -- data: records -------------------------------------------------------------------------------
#
# A record is stored as
#
#     hlc (8) | flags (1) | len(writer id) (1) | 0xFF (1) | CRC32 (4) | writer id | value
#
# flags: 0x01 tombstone, 0x02 checksummed. The CRC32 (zlib's) covers the key, the first ten bytes
# and everything after the CRC, so a flipped byte anywhere in the key, the version, the flags or the
# value fails the check. Records written before checksums (no 0x02, no marker) are read unchecked,
# and get a checksum when next written or scrubbed. One byte cannot turn a checksummed record into
# one of those: without 0x02 the writer id would start with the marker 0xFF, which UTF-8 never does.


class ChecksumError(ValueError):
    """A stored record failed its check (flipped bits, a torn or misplaced write). Never served."""

    def __init__(self, key: bytes, reason: str) -> None:
        super().__init__(f"the record of key {key[:64]!r} failed its check: {reason}")
        self.key = key
        self.reason = reason


class Corrupt(NamedTuple):
    """What a read finds where a record failed its check: not the record, so a caller cannot serve
    it by mistake. A coordinator asks another replica; a node alone answers DATA_LOSS."""

    key: bytes
    reason: str


def _crc(key: bytes, raw: bytes | memoryview, start: int) -> int:
    """The CRC32 of the key, the header and ``raw[start:]`` (writer id and value)."""
    view = memoryview(raw)
    return zlib.crc32(view[start:], zlib.crc32(view[: _HEADER.size], zlib.crc32(key)))


def encode_value(record: Record) -> bytes:
    """The bytes stored under ``record.key``: header, checksum, writer id, then the value."""
    node = record.version.node_id.encode()
    flags = _CHECKSUM | (_TOMBSTONE if record.tombstone else 0)
    head = _HEADER.pack(record.version.hlc, flags, len(node))
    crc = zlib.crc32(record.value, zlib.crc32(node, zlib.crc32(head, zlib.crc32(record.key))))
    return b"".join((head, _CHECK.pack(_MARKER, crc), node, record.value))


def _check(key: bytes, raw: bytes) -> tuple[int, int, int, int]:
    """(hlc, flags, start, end of the writer id) of a stored record; raises ChecksumError if the
    record fails its check."""
    try:
        hlc, flags, node_len = _HEADER.unpack_from(raw)
        if flags & _CHECKSUM:
            marker, crc = _CHECK.unpack_from(raw, _HEADER.size)
            if flags & ~(_CHECKSUM | _TOMBSTONE) or marker != _MARKER:
                raise ChecksumError(key, "damaged header")
            if _crc(key, raw, _CHECKED) != crc:
                raise ChecksumError(key, "checksum mismatch")
            start = _CHECKED
        elif flags & ~_TOMBSTONE or not node_len:
            raise ChecksumError(key, "damaged header of a record without a checksum")
        else:
            start = _HEADER.size
    except struct.error:
        raise ChecksumError(key, "truncated header") from None
    if len(raw) < start + node_len:
        raise ChecksumError(key, "truncated")
    return hlc, flags, start, start + node_len


def _writer(key: bytes, raw: bytes, start: int, end: int) -> str:
    try:
        return raw[start:end].decode()
    except UnicodeDecodeError:  # a damaged record without a checksum, or the flags of one with
        raise ChecksumError(key, "damaged writer id") from None


def decode_value(key: bytes, raw: bytes) -> Record:
    """The record stored under ``key``; raises ChecksumError if it fails its check."""
    hlc, flags, start, end = _check(key, raw)
    return Record(key, raw[end:], Version(hlc, _writer(key, raw, start, end)), bool(flags & _TOMBSTONE))


def decode_version(key: bytes, raw: bytes) -> tuple[Version, bool]:
    """Version and tombstone flag of a stored record, checked, without copying the value."""
    hlc, flags, start, end = _check(key, raw)
    return Version(hlc, _writer(key, raw, start, end)), bool(flags & _TOMBSTONE)


def has_checksum(raw: bytes) -> bool:
    """Whether a stored record carries a checksum (records written before checksums do not)."""
    return len(raw) > _HEADER.size and bool(raw[_HEADER.size - 2] & _CHECKSUM)


# -- pidx and digests: partitions ----------------------------------------------------------------


def partition_prefix(partition: int) -> bytes:
    return _PART.pack(partition)


def pidx_key(partition: int, key: bytes) -> bytes:
    return _PART.pack(partition) + key


def pidx_record_key(index_key: bytes) -> bytes:
    return index_key[_PART.size :]


def partition_of_digest_key(digest_key: bytes) -> int:
    return int(_PART.unpack(digest_key)[0])


def record_hash(key: bytes, version: Version, tombstone: bool) -> int:
    """A 128-bit hash of a record's identity. XOR-ed into its partition's digest.

    The value is left out: a version names exactly one write, so equal versions mean equal values.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(struct.pack(">IQB", len(key), version.hlc, tombstone))
    h.update(key)
    h.update(version.node_id.encode())
    return int.from_bytes(h.digest(), "big")


def encode_digest(digest: int, count: int) -> bytes:
    return _DIGEST.pack(digest.to_bytes(16, "big"), count)


def decode_digest(raw: bytes | None) -> tuple[bytes, int]:
    """(digest, record count); an absent entry is an empty partition."""
    if raw is None:
        return EMPTY_DIGEST, 0
    digest, count = _DIGEST.unpack(raw)
    return digest, count


# -- tombs: tombstones by age --------------------------------------------------------------------


def tomb_key(hlc: int, key: bytes) -> bytes:
    return _HLC.pack(hlc) + key


def decode_tomb_key(index_key: bytes) -> tuple[int, bytes]:
    """(the tombstone's hlc, its record's key)."""
    return _HLC.unpack_from(index_key)[0], index_key[_HLC.size :]


# -- hints ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hint:
    """A write that a replica missed, kept until it can be delivered."""

    id: bytes
    target: str
    created_ms: int
    record: Record | None
    """None when the stored hint failed its check: it is dropped, and anti-entropy repairs instead."""


def hint_prefix(target: str) -> bytes:
    return target.encode() + b"\x00"


def hint_id(target: str, sequence: int) -> bytes:
    return hint_prefix(target) + sequence.to_bytes(_HINT_SEQ, "big")


def hint_sequence(hint_id: bytes) -> int:
    return int.from_bytes(hint_id[-_HINT_SEQ:], "big")


def hint_target(hint_id: bytes) -> str:
    return hint_id[: hint_id.index(b"\x00")].decode()


def encode_hint(record: Record, created_ms: int) -> bytes:
    return _HINT_HEAD.pack(created_ms, len(record.key)) + record.key + encode_value(record)


def decode_hint(hint_id: bytes, raw: bytes) -> Hint:
    """A stored hint; raises ChecksumError if its record fails its check."""
    try:
        created_ms, key_len = _HINT_HEAD.unpack_from(raw)
    except struct.error:
        raise ChecksumError(b"", "truncated hint") from None
    key = raw[_HINT_HEAD.size : _HINT_HEAD.size + key_len]
    record = decode_value(key, raw[_HINT_HEAD.size + key_len :])
    return Hint(hint_id, hint_target(hint_id), created_ms, record)


# -- meta ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetaKey(Generic[T]):
    """One named record of the ``meta`` sub-database and its encoding."""

    name: str
    encode: Callable[[T], bytes]
    decode: Callable[[bytes], T]

    @property
    def key(self) -> bytes:
        return self.name.encode()


def _u64(name: str) -> MetaKey[int]:
    return MetaKey(name, _U64.pack, lambda raw: int(_U64.unpack(raw)[0]))


def _decode_membership(raw: bytes) -> Membership:
    return Membership.from_proto(types_pb2.Membership.FromString(raw))


class Meta:
    """The meta records a node keeps."""

    NODE_ID: MetaKey[str] = MetaKey("node_id", str.encode, bytes.decode)
    """The node the store belongs to: a data directory is never shared by two nodes."""
    PARTITIONS: MetaKey[int] = _u64("partitions")
    """The partition count the data is laid out in; it never changes."""
    HLC: MetaKey[int] = _u64("hlc")
    """The clock's high-water mark, written with every commit: the clock never goes back."""
    ALIVE_MS: MetaKey[int] = _u64("alive_ms")
    """When the node last noted it was alive: a node away past the tombstone grace rebuilds."""
    LAST_BACKUP: MetaKey[int] = _u64("last_backup")
    """Unix time of the node's last backup."""
    MEMBERSHIP: MetaKey[Membership] = MetaKey(
        "membership", lambda m: m.to_proto().SerializeToString(), _decode_membership
    )
    """The newest membership the node installed: a restart never falls back to an older one."""

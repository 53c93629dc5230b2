"""The on-disk schema of a node's LMDB store: sub-databases, key layouts, value encodings and the
meta records. Everything that reads or writes the store's bytes goes through here.

Sub-databases:

- ``data``    key -> version, tombstone flag, value (:func:`encode_value`)
- ``pidx``    partition (2 bytes) + key -> ""    every record, by partition, for streaming
- ``digests`` partition -> XOR of record hashes (16 bytes) + record count (8 bytes)
- ``tombs``   hlc (8 bytes) + key -> ""          tombstones by age, for garbage collection
- ``hints``   target node + NUL + sequence -> created ms, key, encoded record
- ``meta``    name -> bytes: the typed records of :class:`Meta`
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

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
_TOMBSTONE = 0x01
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
    record: Record


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
    created_ms, key_len = _HINT_HEAD.unpack_from(raw)
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

"""A snapshot as a stream: the store's records, framed and zstd-compressed, for object storage.

An object store cannot map a file the way LMDB needs, and a node must not need a free disk the size
of its data, so a snapshot sent to a bucket is not an LMDB copy but its records in key order, as
they are stored (each keeps its CRC32, so every reader checks every record)::

    MAGIC, then per record: len(key) (4, big-endian) │ len(value) (4, big-endian) │ key │ value,
    then 0xFFFFFFFF │ number of records (4, big-endian)

The whole stream is one zstd frame; the trailer tells a complete stream from one cut short at a
record's end. Encoding and decoding hold one block of compressed output and
one record at a time, whatever the size of the store.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import IO, cast

import zstandard

from kvnode.core.errors import InvalidArgument

MAGIC = b"KVSNAP1\n"
BLOCK = 4 << 20
"""Bytes of compressed output gathered before they are handed on (one upload write)."""
BATCH = 1 << 20
"""Bytes of framed records handed to zstd at once (one call per record would cost more than zstd)."""
LEVEL = 1
"""zstd's fastest standard level: in bench/objectstore.py it halved the backup's time against
level 3 (2.1x against 4.4x the library's upload, same run) and wrote as many bytes on its values."""
THREADS = 2
"""zstd's worker threads: compression overlaps reading the store and uploading. Each works on a
job of :data:`BATCH` bytes (zstd's default job is 8 MiB or more, and it keeps several per thread:
80 MB more at the peak at level 3, against 15 MB with 1 MiB jobs)."""

_LENGTHS = struct.Struct(">II")
_END = 0xFFFFFFFF
"""A key length no key has: the trailer, whose second field is the number of records."""


def encode(records: Iterable[tuple[bytes, bytes]]) -> Iterator[bytes]:
    """The compressed stream of ``(key, stored value)`` pairs, in blocks of about :data:`BLOCK`.
    Records are framed in batches of about :data:`BATCH` bytes, which zstd compresses on its own
    threads (outside the GIL) while the upload goes on."""
    params = zstandard.ZstdCompressionParameters.from_level(LEVEL, threads=THREADS, job_size=BATCH)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    out: list[bytes] = []
    out_size = 0
    batch: list[bytes] = [MAGIC]
    batch_size = count = 0
    for key, raw in records:
        count += 1
        batch.append(_LENGTHS.pack(len(key), len(raw)))
        batch.append(key)
        batch.append(raw)
        batch_size += len(key) + len(raw)
        if batch_size >= BATCH:
            piece = compressor.compress(b"".join(batch))
            batch, batch_size = [], 0
            out.append(piece)
            out_size += len(piece)
            if out_size >= BLOCK:
                yield b"".join(out)
                out, out_size = [], 0
    batch.append(_LENGTHS.pack(_END, count))
    out.append(compressor.compress(b"".join(batch)))
    out.append(compressor.flush())
    yield b"".join(out)


class _Chunks:
    """A file-like ``read`` over an iterator of byte chunks, for zstd's stream reader."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._rest = b""

    def read(self, size: int = -1) -> bytes:
        if not self._rest:
            self._rest = next(self._chunks, b"")
        size = len(self._rest) if size < 0 else size
        out, self._rest = self._rest[:size], self._rest[size:]
        return out


def _read(reader: zstandard.ZstdDecompressionReader, size: int) -> bytes:
    """Exactly ``size`` decompressed bytes; fewer only at the end of the stream."""
    parts: list[bytes] = []
    while size > 0:
        part = reader.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def decode(compressed: Iterable[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """The ``(key, stored value)`` pairs of a stream made by :func:`encode`, unchecked: the caller
    decodes each value, which checks its CRC. A stream cut short, or not one of ours, raises
    InvalidArgument saying so."""
    source = cast(IO[bytes], _Chunks(compressed))
    reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=1 << 20)
    try:
        if _read(reader, len(MAGIC)) != MAGIC:
            raise InvalidArgument("not a kvstore snapshot stream (bad magic)")
        records = 0
        while len(lengths := _read(reader, _LENGTHS.size)) == _LENGTHS.size:
            key_len, value_len = _LENGTHS.unpack(lengths)
            if key_len == _END:
                if value_len != records:
                    raise InvalidArgument(f"snapshot stream ends after {records} records, not {value_len}")
                return
            body = _read(reader, key_len + value_len)
            if len(body) != key_len + value_len:
                break
            records += 1
            yield body[:key_len], body[key_len:]
    except zstandard.ZstdError as exc:
        raise InvalidArgument(f"snapshot stream does not decompress: {exc}") from None
    raise InvalidArgument(f"snapshot stream is truncated after {records} records")

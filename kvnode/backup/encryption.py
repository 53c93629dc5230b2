"""Client-side encryption of a snapshot stream: AES-256-GCM, block by block, on top of whatever
encryption the bucket does itself.

The compressed stream's blocks are sealed one by one, so encrypting and decrypting hold one block::

    MAGIC │ nonce prefix (8 random bytes) │ per block: len(sealed) (4, big-endian) │ sealed block

Block ``i`` is sealed with the nonce ``prefix ‖ i`` (a fresh random prefix per snapshot, so no
nonce repeats under one key) and, as associated data, its index and whether it is the last. So a
reordered, dropped, repeated or cut-off block fails to open, as does any changed byte.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kvnode.core.errors import InvalidArgument, StartupError

MAGIC = b"KVAESGCM1"
KEY_BYTES = 32
_LENGTH = struct.Struct(">I")
_AAD = struct.Struct(">Q?")


def load_key(path: str) -> bytes:
    """A 256-bit key from a file: 64 hex digits (``openssl rand -hex 32``)."""
    try:
        text = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"cannot read the backup encryption key file {path}: {exc}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise StartupError(f"the backup encryption key in {path} must be {2 * KEY_BYTES} hex digits")
    return key


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def seal(blocks: Iterable[bytes], key: bytes) -> Iterator[bytes]:
    """The sealed stream of ``blocks`` (each sealed as it comes; the last one is marked)."""
    aead = AESGCM(key)
    prefix = os.urandom(8)
    yield MAGIC + prefix
    pending: bytes | None = None
    index = 0
    for block in blocks:
        if pending is not None:
            yield _frame(aead, prefix, index, pending, last=False)
            index += 1
        pending = block
    yield _frame(aead, prefix, index, pending or b"", last=True)


def _frame(aead: AESGCM, prefix: bytes, index: int, block: bytes, *, last: bool) -> bytes:
    sealed = aead.encrypt(_nonce(prefix, index), block, _AAD.pack(index, last))
    return _LENGTH.pack(len(sealed)) + sealed


class _Bytes:
    """Exact reads from an iterator of chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def read(self, size: int) -> bytes:
        parts = [self._buffer]
        have = len(self._buffer)
        while have < size:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        self._buffer = data[size:]
        return data[:size]

    def at_end(self) -> bool:
        if not self._buffer:
            self._buffer = self.read(1)
        return not self._buffer

    def rest(self) -> Iterator[bytes]:
        if self._buffer:
            yield self._buffer
        yield from self._chunks


def plain(chunks: Iterable[bytes], key: bytes | None) -> Iterator[bytes]:
    """The stream as it was before :func:`seal`: opened when it is sealed (which needs the key),
    passed on as it is when not. Raises InvalidArgument when a sealed stream does not open: sealed
    with another key, or changed or cut short."""
    source = _Bytes(chunks)
    head = source.read(len(MAGIC))
    if head != MAGIC:
        yield head
        yield from source.rest()
        return
    if key is None:
        raise InvalidArgument("the snapshot is encrypted and this node has no --backup-encryption-key-file")
    prefix = source.read(8)
    aead = AESGCM(key)
    index = 0
    while True:
        header = source.read(_LENGTH.size)
        (size,) = _LENGTH.unpack(header) if len(header) == _LENGTH.size else (-1,)
        sealed = source.read(size) if size >= 0 else b""
        if size < 0 or len(sealed) < size:
            raise InvalidArgument(f"the encrypted snapshot is truncated after {index} blocks")
        last = source.at_end()
        try:
            yield aead.decrypt(_nonce(prefix, index), sealed, _AAD.pack(index, last))
        except InvalidTag:
            raise InvalidArgument(
                f"encrypted snapshot block {index} does not open: another key, or the object was changed"
            ) from None
        if last:
            return
        index += 1

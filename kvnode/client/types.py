"""The values the client hands back, and the coercions of what callers hand in.

Results are small frozen dataclasses rather than protobuf messages so that callers never depend on
the wire format, and so that "absent" is ``None`` instead of a message with ``found = false``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from kvnode.api.v1 import types_pb2
from kvnode.core.errors import KVError
from kvnode.core.levels import Level
from kvnode.core.records import Version

KeyLike = bytes | bytearray | memoryview | str
"""Keys and values: bytes as they are, ``str`` encoded as UTF-8."""

ConsistencyLike = Level | str | None
"""A :class:`Level`, its name (``"QUORUM"``), or ``None`` for the node's default."""


class ClientClosed(RuntimeError):
    """The client was closed; make a new one."""

    def __init__(self) -> None:
        super().__init__("the client is closed")


@dataclass(frozen=True)
class Entry:
    """A live key as read from the cluster. ``value`` is empty for ``keys_only`` scans."""

    key: bytes
    value: bytes
    version: Version

    @classmethod
    def from_proto(cls, kv: types_pb2.KeyValue) -> Entry | None:
        if not kv.found:
            return None
        return cls(kv.key, kv.value, Version.from_proto(kv.version))


@dataclass(frozen=True)
class WriteResult:
    """What a put or a delete returns. ``previous`` is the replaced entry when it was asked for with
    ``return_previous=True`` and there was one; otherwise ``None``."""

    version: Version
    previous: Entry | None = None


PutResult = WriteResult
DeleteResult = WriteResult


class ScanPage(NamedTuple):
    """One page of a scan; unpacks as ``entries, token``. An empty token means the range is done."""

    entries: list[Entry]
    token: bytes


@dataclass(frozen=True)
class Attempt:
    """One RPC sent to one address, reported to the ``on_attempt`` hook after it finished."""

    method: str
    address: str
    number: int
    """1 for the first try of a call, 2 for its first retry, and so on."""
    seconds: float
    error: KVError | None = None
    unreachable: bool = False
    """True when the address could not be connected to (the request was never sent)."""


def to_bytes(value: KeyLike, what: str = "key") -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def to_consistency(level: ConsistencyLike) -> int:
    """The wire value of a level; 0 (unspecified) leaves the choice to the node."""
    if level is None:
        return types_pb2.CONSISTENCY_UNSPECIFIED
    return int(Level.parse(level) if isinstance(level, str) else Level(level))

"""Consistency levels, and how many replicas each needs: the quorum is defined here, once."""

from __future__ import annotations

from enum import IntEnum

from kvnode.api.v1 import types_pb2
from kvnode.core.errors import InvalidArgument


def quorum(replicas: int) -> int:
    """A majority of ``replicas``: any two quorums of the same replica set overlap."""
    return replicas // 2 + 1


class Level(IntEnum):
    ONE = types_pb2.CONSISTENCY_ONE
    QUORUM = types_pb2.CONSISTENCY_QUORUM
    ALL = types_pb2.CONSISTENCY_ALL
    LINEARIZABLE = types_pb2.CONSISTENCY_LINEARIZABLE

    def needed(self, replicas: int) -> int:
        """Answers required from a replica set of this size."""
        if self is Level.ONE:
            return 1
        if self is Level.ALL:
            return replicas
        return quorum(replicas)

    @classmethod
    def parse(cls, name: str) -> Level:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown consistency level {name!r}: choose ONE, QUORUM, ALL or LINEARIZABLE"
            ) from None


def resolve(value: int, default: Level) -> Level:
    """The level a request asked for, or the node's default for CONSISTENCY_UNSPECIFIED."""
    if value == types_pb2.CONSISTENCY_UNSPECIFIED:
        return default
    try:
        return Level(value)
    except ValueError:
        raise InvalidArgument(f"unknown consistency level {value}") from None


def single_key_only(level: Level, operation: str) -> None:
    """Refuse LINEARIZABLE for ``operation`` (a batch, a scan, a restore): the quorum register that
    makes it linearizable works one key at a time."""
    if level is Level.LINEARIZABLE:
        raise InvalidArgument(f"LINEARIZABLE is for single-key operations; {operation} at ONE, QUORUM or ALL")

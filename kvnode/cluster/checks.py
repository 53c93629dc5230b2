"""Which records a replica may store.

Every path that stores a record goes through :meth:`LocalReplica.apply` and this check: client
writes this node coordinates, peers' ``Replica.Apply``, read repairs, anti-entropy pulls and
transfers. So a record that a well-behaved node could never have written (a key the storage cannot
hold, a value over the limit, a malformed writer id, a version from the future) is refused on its
own, whoever sent it, and the other records of its batch are stored as usual.
"""

from __future__ import annotations

from kvnode.cluster.clock import ClockAhead, HybridClock
from kvnode.core.errors import InvalidArgument, KVError
from kvnode.core.names import validate_node_id
from kvnode.core.records import Record
from kvnode.storage.schema import MAX_KEY_BYTES

_KNOWN_WRITERS = 4096  # writer ids already checked; a cluster has far fewer


class RecordCheck:
    def __init__(self, clock: HybridClock, *, max_value_bytes: int) -> None:
        self._clock = clock
        self._max_value_bytes = max_value_bytes
        self._writers: set[str] = set()

    def refusal(self, record: Record) -> KVError | None:
        """Why ``record`` may not be stored, or None when it may."""
        key = record.key
        if not key or len(key) > MAX_KEY_BYTES:
            return InvalidArgument(f"record key of {len(key)} bytes: keys are 1 to {MAX_KEY_BYTES} bytes")
        if len(record.value) > self._max_value_bytes:
            return InvalidArgument(
                f"record value of {len(record.value)} bytes is over the limit of {self._max_value_bytes} "
                "bytes (--max-value-bytes)"
            )
        writer = record.version.node_id
        if writer not in self._writers:
            try:
                validate_node_id(writer)
            except ValueError as exc:
                return InvalidArgument(f"record version: {exc}")
            if len(self._writers) < _KNOWN_WRITERS:
                self._writers.add(writer)
        if record.version.hlc > self._clock.last:  # not past what this node's clock has already been at
            try:
                self._clock.check(record.version.hlc, f"the version of a record written by {writer}")
            except ClockAhead as exc:
                return exc
        return None

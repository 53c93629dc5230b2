"""The storage writer process: runs every write transaction of a node, one batch at a time.

Why a process and not a thread: in one interpreter a writer thread competes with the event loop for
the GIL, and py-lmdb drops and retakes the GIL on every get and put, so under load each commit
waited milliseconds for the loop and each of those hand-offs stalled the loop in turn (bench/README.md
has the side-by-side figures). LMDB is built for this: one process writes, any number read the same
files.

Protocol, over the process's stdin and stdout: length-prefixed pickles. The node sends
``(ops, trailer)``, two lists of :class:`~kvnode.storage.ops.WriteOp`; all of them run in one
transaction, committed with fsync before the reply. The reply is ``(outcomes, seconds)``: per op
``(True, result)`` or ``(False, exception)``, and the time the transaction took. The trailer's
results are not returned (the node's clock high-water mark rides there). A store-level error (full
disk, I/O) fails the whole batch; an op that raises anything else is isolated by rerunning each op
in its own transaction, so it cannot fail its neighbours.

Run by :class:`kvnode.storage.groupcommit.GroupCommitter` as
``python -m kvnode.storage.writer PATH PARTITIONS MAP_SIZE MAX_MAP_SIZE``. It exits when its stdin
closes, which also happens when the node is killed.
"""

from __future__ import annotations

import logging
import pickle
import struct
import sys
import time
from pathlib import Path
from typing import IO, Any

from kvnode.core.errors import StorageError, StorageFull
from kvnode.core.logs import RateLimitedLog
from kvnode.storage.engine import Storage
from kvnode.storage.ops import ApplyRecords, WriteOp
from kvnode.storage.writes import WriteTxn

log = logging.getLogger("kvnode.storage.writer")
failures = RateLimitedLog(log)

Outcome = tuple[bool, Any]

READY = b"ready"
_LEN = struct.Struct(">I")


def send_frame(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LEN.pack(len(data)) + data)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """The next frame, or None at end of stream."""
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (size,) = _LEN.unpack(head)
    return pickle.loads(stream.read(size))


def take_frame(buffer: bytearray) -> tuple[bool, Any]:
    """Remove the first complete frame from ``buffer``: (True, frame), or (False, None) if none is."""
    if len(buffer) < _LEN.size:
        return False, None
    end = _LEN.size + _LEN.unpack_from(buffer)[0]
    if len(buffer) < end:
        return False, None
    frame = pickle.loads(buffer[_LEN.size : end])
    del buffer[:end]
    return True, frame


def _call(txn: WriteTxn, op: object) -> Any:
    if not isinstance(op, WriteOp):
        raise ValueError(f"not a write operation: {type(op).__name__}")
    return op.run(txn)


def _run_all(txn: WriteTxn, ops: list[WriteOp[Any]], trailer: list[WriteOp[Any]]) -> list[Any]:
    results = [_call(txn, op) for op in ops]
    for op in trailer:
        _call(txn, op)
    return results


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a StorageError that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any pickling failure
        return StorageError(f"storage write failed: {type(exc).__name__}: {exc}")
    return exc


def run_batch(storage: Storage, ops: list[WriteOp[Any]], trailer: list[WriteOp[Any]]) -> list[Outcome]:
    """Run ``ops`` in one durable transaction; see the module docstring for failure isolation."""
    try:
        return [(True, r) for r in storage.write(lambda txn: _run_all(txn, ops, trailer))]
    except StorageFull as exc:  # the store itself is full: every op shares it
        return [(False, exc)] * len(ops)
    except Exception:  # noqa: BLE001 - an op raised: rerun each alone so only that one fails
        return [_run_alone(storage, op, trailer) for op in ops]


def _run_alone(storage: Storage, op: WriteOp[Any], trailer: list[WriteOp[Any]]) -> Outcome:
    try:
        return True, storage.write(lambda txn: _run_all(txn, [op], trailer)[0])
    except StorageFull as exc:
        return False, exc
    except Exception as exc:  # noqa: BLE001 - reported to the op's caller
        if isinstance(op, ApplyRecords) and len(op.rows) > 1:
            return True, [_apply_alone(storage, row, trailer) for row in op.rows]
        failures.log(
            type(exc).__name__, logging.ERROR, "a write failed alone: %s: %s", type(exc).__name__, exc
        )
        return False, _portable(exc)


def _apply_alone(storage: Storage, row: Any, trailer: list[WriteOp[Any]]) -> Any:
    """One record in a transaction of its own: its result, or its error as its result."""
    ok, result = _run_alone(storage, ApplyRecords([row]), trailer)
    if ok:
        return result[0]
    size = len(row[0]) if isinstance(row[0], bytes) else -1
    failures.log("record", logging.ERROR, "a record with a %d-byte key was not stored: %s", size, result)
    return result


def serve(storage: Storage, requests: IO[bytes], replies: IO[bytes]) -> None:
    send_frame(replies, READY)
    while (frame := read_frame(requests)) is not None:
        ops, trailer = frame
        started = time.perf_counter()
        outcomes = run_batch(storage, ops, trailer)
        send_frame(replies, (outcomes, time.perf_counter() - started))


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path, partitions, map_size, max_map_size = argv
    storage = Storage(
        Path(path), partitions=int(partitions), map_size=int(map_size), max_map_size=int(max_map_size)
    )
    try:
        serve(storage, sys.stdin.buffer, sys.stdout.buffer)
    finally:
        storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Group commit: many concurrent writes share one LMDB transaction and one fsync.

Requests queue operations from the event loop. A single writer thread takes everything queued,
runs it in one write transaction, commits (fsync), and only then resolves the requests' futures.
While one commit is in its fsync, the next batch gathers, so the batch size follows the load and an
idle node adds no delay. An operation that raises is isolated: the batch is rerun with each
operation in its own transaction, so one bad operation cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kvnode.errors import KVError
from kvnode.storage.engine import Storage, WriteTxn

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[WriteTxn], Any]
_STOP = object()


class CommitObserver:
    """Receives each commit's size and duration (metrics hook)."""

    def committed(self, ops: int, seconds: float) -> None:  # pragma: no cover - interface
        pass


class GroupCommitter:
    def __init__(
        self,
        storage: Storage,
        *,
        max_batch: int = 4096,
        observer: CommitObserver | None = None,
        on_commit: Op | None = None,
    ) -> None:
        self._storage = storage
        self._max_batch = max_batch
        self._observer = observer or CommitObserver()
        self._on_commit = on_commit or (lambda txn: None)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    async def submit(self, op: Callable[[WriteTxn], T]) -> T:
        """Run ``op`` in the next commit; returns its result once the commit is durable."""
        if self._closed or self._loop is None:
            raise RuntimeError("the group committer is not running")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((op, future))
        return await future

    def close(self) -> None:
        """Commit everything queued, then stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is _STOP for item in batch):
                stopping = True
                batch = [item for item in batch if item is not _STOP]
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        started = time.perf_counter()
        ops = [op for op, _ in batch]
        try:
            results: list[tuple[bool, Any]] = [
                (True, r) for r in self._storage.write(lambda txn: self._run_ops(txn, ops))
            ]
        except KVError as exc:  # the store itself failed (full disk, I/O): every op shares it
            results = [(False, exc)] * len(batch)
        except Exception:  # noqa: BLE001 - an op raised: rerun each alone so only that one fails
            results = [self._commit_one(op) for op in ops]
        self._observer.committed(len(batch), time.perf_counter() - started)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_resolve, [f for _, f in batch], results)

    def _run_ops(self, txn: WriteTxn, ops: list[Op]) -> list[Any]:
        results = [op(txn) for op in ops]
        self._on_commit(txn)
        return results

    def _commit_one(self, op: Op) -> tuple[bool, Any]:
        try:
            return True, self._storage.write(lambda txn: self._run_ops(txn, [op])[0])
        except Exception as exc:  # noqa: BLE001
            return False, exc


def _resolve(futures: list[asyncio.Future[Any]], results: list[tuple[bool, Any]]) -> None:
    for future, (ok, value) in zip(futures, results, strict=True):
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

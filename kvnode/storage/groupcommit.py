"""Group commit: many concurrent writes share one LMDB transaction and one fsync.

Requests submit write operations (:mod:`kvnode.storage.ops`) from the event loop. The storage
writer process (:mod:`kvnode.storage.writer`) runs one batch at a time in one transaction and
replies once the commit is durable; only then do the requests' futures resolve. While one batch
commits, the next one gathers.

Gathering adapts to the load. With few writes in flight, a batch goes out at once, so an idle node
adds no delay. Under load, commits take a fraction of a millisecond, so without help batches shrink
to one or two writes and each write pays a full round of process and gRPC wake-ups. So after a
commit the next batch waits until as many writes as the last batch held have arrived, or
``max_delay`` has passed, whichever comes first, the way PostgreSQL's ``commit_delay`` waits only
when there is company. The bound is paid at most once after a burst; bench/README.md has the
measurements behind its value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import subprocess
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from kvnode.core.errors import StorageError, StorageFull
from kvnode.storage import writer
from kvnode.storage.engine import Storage
from kvnode.storage.ops import WriteOp

log = logging.getLogger(__name__)

T = TypeVar("T")
Pending = tuple[WriteOp[Any], asyncio.Future[Any]]
MAX_DELAY = 0.004
STUCK_AFTER = 10.0
CLOSE_TIMEOUT = 10.0
MAX_BATCH = 4096
START_TIMEOUT = 30.0


def _broken(error: object) -> bool:
    """A storage error that says the store cannot take writes (not a full disk, not one bad op)."""
    return isinstance(error, StorageError) and not isinstance(error, StorageFull)


class CommitObserver(Protocol):
    """Receives each commit's size and duration (the node's metrics)."""

    def committed(self, ops: int, seconds: float) -> None: ...


class _Unobserved:
    def committed(self, ops: int, seconds: float) -> None:
        pass


class GroupCommitter:
    """Gathers write operations from the event loop into batches for the writer process, one batch
    in flight at a time; every operation's result comes back only once its batch is durable.

    ``on_health`` hears why the storage cannot take writes (a commit that has not finished for
    ``stuck_after`` seconds, a batch whose every operation failed with a storage error), and None
    once a commit succeeds again: the node reports NOT_SERVING meanwhile.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        observer: CommitObserver | None = None,
        trailer: Callable[[], list[WriteOp[Any]]] | None = None,
        on_failure: Callable[[StorageError], None] | None = None,
        on_health: Callable[[str | None], None] | None = None,
        max_delay: float = MAX_DELAY,
        stuck_after: float = STUCK_AFTER,
    ) -> None:
        self._storage = storage
        self._observer: CommitObserver = observer or _Unobserved()
        self._trailer = trailer or list
        self._on_failure = on_failure or (lambda error: None)
        self._on_health = on_health or (lambda problem: None)
        self._max_delay = max_delay
        self._stuck_after = stuck_after
        self._watchdog: asyncio.TimerHandle | None = None
        self._problem: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._pending: list[Pending] = []
        self._inflight: list[Pending] | None = None
        self._target = 1
        self._timer: asyncio.TimerHandle | None = None
        self._buffer = bytearray()
        self._failure: StorageError | None = None
        self._idle = asyncio.Event()  # nothing pending and nothing in flight
        self._idle.set()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the writer process and wait until it has opened the store."""
        s = self._storage
        self._loop = loop
        self._process = subprocess.Popen(
            [sys.executable, "-m", "kvnode.storage.writer", str(s.path), str(s.partitions),
             str(s.map_size()), str(s.max_map_size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], START_TIMEOUT)
        if not ready or writer.read_frame(self._process.stdout) != writer.READY:
            self._process.kill()
            raise StorageError(f"the storage writer process for {s.path} did not start; see the node's log")
        fd = self._process.stdout.fileno()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_readable)

    async def submit(self, op: WriteOp[T]) -> T:
        """Run ``op`` in the next commit; returns its result once durable."""
        if self._failure is not None:
            raise self._failure
        if self._loop is None or self._process is None:
            raise RuntimeError("the group committer is not running")
        future: asyncio.Future[T] = self._loop.create_future()
        self._pending.append((op, future))
        if self._inflight is None and (self._timer is None or len(self._pending) >= self._target):
            self._send()
        return await future

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Commit everything submitted, then stop the writer process. A writer that has not
        finished within ``timeout`` seconds is killed, and the writes still waiting fail: a stuck
        disk must not make the node's shutdown hang."""
        if self._process is None or self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            if self._pending and self._inflight is None:
                self._send()
        try:
            async with asyncio.timeout(timeout):
                while self._failure is None and (self._pending or self._inflight is not None):
                    await self._idle.wait()
        except TimeoutError:
            self._process.kill()
            self._fail(f"the storage writer did not finish its commits within {timeout:g}s of shutdown")
        if self._watchdog is not None:
            self._watchdog.cancel()
        process, self._process = self._process, None
        assert process.stdin is not None and process.stdout is not None
        self._loop.remove_reader(process.stdout.fileno())
        with contextlib.suppress(OSError):  # the writer may already be gone
            process.stdin.close()
        await asyncio.to_thread(process.wait)
        process.stdout.close()

    # -- batches -----------------------------------------------------------------------------

    def _send(self) -> None:
        assert self._process is not None and self._process.stdin is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        self._inflight = batch
        self._target = len(batch)
        self._idle.clear()
        assert self._loop is not None
        self._watchdog = self._loop.call_later(self._stuck_after, self._stuck)
        try:
            writer.send_frame(self._process.stdin, ([op for op, _ in batch], self._trailer()))
        except OSError as exc:
            self._fail(self._exited() or f"cannot reach the storage writer process: {exc}")

    def _on_readable(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        try:
            chunk = os.read(self._process.stdout.fileno(), 1 << 20)
        except BlockingIOError:
            return
        if not chunk:
            self._fail(self._exited(timeout=None))
            return
        self._buffer += chunk
        while True:
            complete, reply = writer.take_frame(self._buffer)
            if not complete:
                return
            self._committed(*reply)

    def _stuck(self) -> None:
        self._report(f"the storage writer has not finished a commit in {self._stuck_after:g}s")

    def _report(self, problem: str | None) -> None:
        if problem != self._problem:
            self._problem = problem
            if problem is not None:
                log.error("storage cannot take writes: %s", problem)
            else:
                log.info("storage takes writes again")
            self._on_health(problem)

    def _committed(self, outcomes: list[writer.Outcome], seconds: float) -> None:
        assert self._inflight is not None and self._loop is not None
        batch, self._inflight = self._inflight, None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        errors = [value for ok, value in outcomes if not ok]
        if outcomes and len(errors) == len(outcomes) and all(_broken(e) for e in errors):
            self._report(f"every write of a commit failed: {errors[0]}")
        else:
            self._report(None)
        self._observer.committed(len(batch), seconds)
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if self._pending and (len(self._pending) >= self._target or not self._max_delay):
            self._send()
        elif self._max_delay:
            self._timer = self._loop.call_later(self._max_delay, self._gathered)
        if self._inflight is None and not self._pending:
            self._idle.set()

    def _gathered(self) -> None:
        self._timer = None
        if self._inflight is None and self._pending:
            self._send()

    def _exited(self, timeout: float | None = 1.0) -> str:
        """Why the writer is gone, the same whichever end of its pipes noticed first; "" if it has
        not exited within ``timeout`` (a broken pipe means it has, or is about to)."""
        assert self._process is not None
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return ""
        return f"the storage writer process exited with code {code}; see the node's log"

    def _fail(self, message: str) -> None:
        """Fail every waiting write, once; a closed pipe stays readable, so stop watching it."""
        if self._failure is not None:
            return
        if self._loop is not None and self._process is not None and self._process.stdout is not None:
            self._loop.remove_reader(self._process.stdout.fileno())
        log.error("%s", message)
        self._failure = StorageError(message)
        waiting = (self._inflight or []) + self._pending
        self._inflight, self._pending = None, []
        for _, future in waiting:
            if not future.done():
                future.set_exception(self._failure)
        self._idle.set()
        self._on_failure(self._failure)

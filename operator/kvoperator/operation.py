"""A store's one background operation: long work (a membership change that streams data, a
restore) that runs as an asyncio task while passes go on reporting status and repairing pods.

The task is the only state of a store that lives in the operator process alone, and losing it is
harmless: a membership change is resumed from what the nodes hold, a restore from its status.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Work = Callable[["Operation"], Awaitable[None]]


@dataclass
class Operation:
    """A long-running change (membership, restore) with a line of progress."""

    kind: str  # the step that started it: membership, restore
    reason: str  # the Progressing reason while it runs
    description: str
    task: asyncio.Task[None]
    label: str = ""  # what exactly, for metrics (e.g. add, remove)
    progress: str = ""

    def describe(self) -> str:
        return f"{self.description}: {self.progress}" if self.progress else self.description


class OperationSlot:
    """Holds a store's operation: at most one runs, and its end wakes the store's loop."""

    def __init__(self, name: str, wake: Callable[[], None]) -> None:
        self._name = name  # for the task's name
        self._wake = wake
        self.current: Operation | None = None

    @property
    def busy(self) -> bool:
        return self.current is not None and not self.current.task.done()

    def start(self, kind: str, reason: str, description: str, work: Work, label: str = "") -> Operation:
        """Run ``work`` in the background as the store's one operation."""
        assert not self.busy, "one operation at a time"

        async def runner() -> None:
            try:
                await work(operation)
            finally:
                self._wake()

        task = asyncio.get_running_loop().create_task(runner(), name=f"{self._name}: {kind}")
        operation = Operation(kind, reason, description, task, label)
        self.current = operation
        return operation

    def collect(self, kind: str) -> tuple[Operation, BaseException | None] | None:
        """The finished operation of ``kind`` and its error (None if it succeeded), which frees the
        slot; None while it runs, or when the operation is another step's."""
        op = self.current
        if op is None or op.kind != kind or not op.task.done():
            return None
        self.current = None
        if op.task.cancelled():
            return op, asyncio.CancelledError()
        return op, op.task.exception()

    async def cancel(self) -> None:
        op = self.current
        if op is not None and not op.task.done():
            op.task.cancel()
            with contextlib.suppress(BaseException):  # it is being cancelled; its error is moot
                await op.task
        self.current = None

"""The reconcile loops of the stores this operator runs, one task per KVStore.

The operator starts a store's loop when it first sees the store and stops it when the store goes.
It runs the loops itself rather than as kopf daemons because kopf puts a finalizer on every object
that has a daemon, and a finalizer is what strands a KVStore when the operator can no longer
remove it: a namespace being deleted takes the operator's Role with it, and ``helm uninstall``
removes the operator before the store (docs/design.md, "Deleting a store needs no operator").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from kvoperator.context import OperatorContext
from kvoperator.reconciler import StoreReconciler

log = logging.getLogger(__name__)

# How long a loop may take to finish its pass after it was asked to stop, before it is cancelled.
STOP_TIMEOUT = 10.0


@dataclass
class _Loop:
    reconciler: StoreReconciler
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class StoreRegistry:
    """Maps (namespace, name) to the store's reconciler and the task that runs its loop."""

    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx
        self._loops: dict[tuple[str, str], _Loop] = {}

    def start(self, namespace: str, name: str) -> bool:
        """Run the store's reconcile loop unless it runs already; True if it was started now."""
        key = (namespace, name)
        loop = self._loops.get(key)
        if loop is not None and loop.task is not None and not loop.task.done():
            return False
        loop = _Loop(StoreReconciler(self.ctx, namespace, name))
        loop.task = asyncio.get_running_loop().create_task(
            loop.reconciler.run(loop.stopping.is_set), name=f"reconcile {namespace}/{name}"
        )
        self._loops[key] = loop
        return True

    async def stop(self, namespace: str, name: str, timeout: float = STOP_TIMEOUT) -> StoreReconciler | None:
        """Stop the store's loop (its running operation is cancelled); None if none ran."""
        loop = self._loops.pop((namespace, name), None)
        if loop is None:
            return None
        await self._stop(loop, timeout)
        return loop.reconciler

    async def stop_all(self, timeout: float = STOP_TIMEOUT) -> None:
        loops = list(self._loops.values())
        self._loops.clear()
        await asyncio.gather(*(self._stop(loop, timeout) for loop in loops))

    @staticmethod
    async def _stop(loop: _Loop, timeout: float) -> None:
        loop.stopping.set()
        loop.reconciler.wake()
        task = loop.task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            log.warning(
                "%s: the reconcile loop did not stop in %.0fs; cancelling it", task.get_name(), timeout
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        except Exception:
            log.exception("%s failed", task.get_name())
        with contextlib.suppress(Exception):
            await loop.reconciler.cancel_operation()

    def running(self, namespace: str, name: str) -> bool:
        loop = self._loops.get((namespace, name))
        return loop is not None and loop.task is not None and not loop.task.done()

    def wake(self, namespace: str, name: str) -> None:
        """Ask a store's reconciler for a pass now (a no-op for stores it does not run)."""
        loop = self._loops.get((namespace, name))
        if loop is not None:
            loop.reconciler.wake()

    def __iter__(self) -> Iterator[StoreReconciler]:
        return iter([loop.reconciler for loop in self._loops.values()])

    def __len__(self) -> int:
        return len(self._loops)

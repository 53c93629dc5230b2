"""The reconcile loop of one store: ordered, idempotent steps over a fresh observation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from kvoperator.context import OperatorContext
from kvoperator.observation import observe
from kvoperator.operation import OperationSlot
from kvoperator.passes import Pass, Step
from kvoperator.steps import STEPS

log = logging.getLogger(__name__)


class StoreReconciler:
    """Runs one KVStore's reconcile loop (a kopf daemon calls :meth:`run`).

    Each pass observes the store (objects, pods, node health, membership, its status), then runs
    the steps in order; every step brings one thing to its desired state and does nothing when it
    already is. A step that fails is counted and reported, and the pass goes on. Long work (a
    membership change streaming data, a restore) runs as the store's single background operation,
    so passes keep reporting status and repairing pods meanwhile, and never start a second change.
    The reconciler itself keeps only that running task and its wake-up event: whatever a decision
    remembers is in the store's status, so a new reconciler (after an operator restart) decides
    the same.
    """

    def __init__(self, ctx: OperatorContext, namespace: str, name: str) -> None:
        self.ctx = ctx
        self.namespace = namespace
        self.name = name
        self._wake = asyncio.Event()
        self.operations = OperationSlot(f"{namespace}/{name}", self.wake)

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stopped: Callable[[], bool]) -> None:
        """Reconcile until ``stopped()``; a pass every reconcile_interval, or sooner when woken."""
        interval = self.ctx.config.reconcile_interval
        try:
            while not stopped():
                self._wake.clear()
                await self.reconcile_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=interval)
        finally:
            await self.operations.cancel()

    async def reconcile_once(self, steps: Sequence[Step] = STEPS) -> Pass | None:
        """One pass over ``steps`` (every step by default). None if the store is gone or could not
        be observed."""
        metrics = self.ctx.metrics
        started = time.monotonic()
        try:
            observed = await observe(
                self.ctx.kube, self.ctx.admin, self.ctx.config, self.namespace, self.name
            )
        except Exception:
            metrics.reconciles.labels(self.namespace, self.name, "error").inc()
            metrics.step_errors.labels(self.namespace, self.name, "observe").inc()
            log.exception("%s/%s: observing the store failed", self.namespace, self.name)
            return None
        if observed is None:
            return None
        current = Pass.start(self.ctx, observed, self.operations)
        failed = False
        for step in steps:
            ok = await self._run_step(step, current)
            failed = failed or not ok
        metrics.reconciles.labels(self.namespace, self.name, "error" if failed else "ok").inc()
        metrics.reconcile_duration.labels(self.namespace, self.name).observe(time.monotonic() - started)
        return current

    async def _run_step(self, step: Step, current: Pass) -> bool:
        """Run one step; False if it failed (counted, logged and reported as ReconcileError)."""
        metrics = self.ctx.metrics
        started = time.monotonic()
        try:
            await step.run(current)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics.step_errors.labels(self.namespace, self.name, step.name).inc()
            current.report.degrade("ReconcileError", f"step {step.name} failed: {exc}")
            log.exception("%s/%s: step %s failed", self.namespace, self.name, step.name)
            return False
        finally:
            metrics.step_duration.labels(step.name).observe(time.monotonic() - started)
        return True

    async def cancel_operation(self) -> None:
        await self.operations.cancel()

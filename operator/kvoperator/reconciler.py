"""The reconcile loop of one store: ordered, idempotent steps over a fresh observation.

A kopf daemon runs :meth:`StoreReconciler.run` for each KVStore. Each pass observes the store
(objects, pods, node health, membership), then runs the steps in order; every step brings one
thing to its desired state and does nothing when it already is. Long work (a membership change
streaming data, a restore) runs as the store's single background *operation*, so passes keep
reporting status and repairing pods meanwhile, and never start a second change.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvoperator.report import Report
from kvoperator.state import Observed, observe

if TYPE_CHECKING:
    from kvoperator.context import OperatorContext

log = logging.getLogger(__name__)


@dataclass
class Operation:
    """A long-running change (membership, restore) with a line of progress."""

    kind: str
    reason: str  # the Progressing reason while it runs
    description: str
    task: asyncio.Task[None]
    label: str = ""  # what exactly, for metrics (e.g. add, remove)
    started: float = field(default_factory=time.monotonic)
    progress: str = ""

    def describe(self) -> str:
        return f"{self.description}: {self.progress}" if self.progress else self.description


@dataclass
class Pass:
    """One reconcile pass: the shared inputs and the report the steps fill in."""

    ctx: OperatorContext
    reconciler: StoreReconciler
    observed: Observed
    report: Report = field(default_factory=Report)
    now: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))

    @property
    def store(self) -> dict[str, Any]:
        return self.observed.store


Step = Callable[[Pass], Awaitable[None]]


class StoreReconciler:
    def __init__(self, ctx: OperatorContext, namespace: str, name: str) -> None:
        self.ctx = ctx
        self.namespace = namespace
        self.name = name
        self.operation: Operation | None = None
        self.last_failure: tuple[str, str] | None = None  # (reason, message) of the last failed operation
        self.retry_after = 0.0  # monotonic time before which a failed operation is not retried
        # pod uid -> (its container's restart count, monotonic time its node stopped serving)
        self.unhealthy_since: dict[str, tuple[int, float]] = {}
        self.refusal = ""  # the scale-down refusal last reported (events are posted on change)
        # pod name -> (pod uid/restart count of the rebuild reported, whether its end was reported)
        self.rebuilds: dict[str, tuple[str, bool]] = {}
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------

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
            await self.cancel_operation()

    async def reconcile_once(self, steps: list[Step] | None = None) -> Pass | None:
        """One pass over every step (or the given ones). None if the store is gone."""
        from kvoperator.steps import STEPS

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
        current = Pass(self.ctx, self, observed)
        failed = False
        for step in steps if steps is not None else STEPS:
            step_name = step.__module__.rsplit(".", 1)[-1]
            step_started = time.monotonic()
            try:
                await step(current)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed = True
                metrics.step_errors.labels(self.namespace, self.name, step_name).inc()
                current.report.degrade("ReconcileError", f"step {step_name} failed: {exc}")
                log.exception("%s/%s: step %s failed", self.namespace, self.name, step_name)
            finally:
                metrics.step_duration.labels(step_name).observe(time.monotonic() - step_started)
        metrics.reconciles.labels(self.namespace, self.name, "error" if failed else "ok").inc()
        metrics.reconcile_duration.labels(self.namespace, self.name).observe(time.monotonic() - started)
        return current

    # -- the background operation ------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.operation is not None and not self.operation.task.done()

    def start_operation(
        self,
        kind: str,
        reason: str,
        description: str,
        work: Callable[[Operation], Awaitable[None]],
        label: str = "",
    ) -> Operation:
        """Run ``work`` in the background as the store's one operation; wake a pass when it ends."""
        assert not self.busy, "one operation at a time"

        async def runner() -> None:
            try:
                await work(operation)
            finally:
                self.wake()

        task = asyncio.get_running_loop().create_task(runner(), name=f"{self.namespace}/{self.name}: {kind}")
        operation = Operation(kind, reason, description, task, label)
        self.operation = operation
        return operation

    def collect_operation(self) -> tuple[Operation, BaseException | None] | None:
        """The finished operation and its error (None if it succeeded); None while one runs."""
        op = self.operation
        if op is None or not op.task.done():
            return None
        self.operation = None
        if op.task.cancelled():
            return op, asyncio.CancelledError()
        return op, op.task.exception()

    async def cancel_operation(self) -> None:
        op = self.operation
        if op is not None and not op.task.done():
            op.task.cancel()
            with contextlib.suppress(BaseException):  # it is being cancelled; its error is moot
                await op.task
        self.operation = None

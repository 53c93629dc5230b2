"""What a reconcile step gets: one pass over a store, and the step's own shape.

This module sits below the reconciler and the steps, so that neither imports the other's module
to know what a pass is.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kvoperator.context import OperatorContext
from kvoperator.memory import Memory
from kvoperator.observation import Observed
from kvoperator.operation import OperationSlot
from kvoperator.report import Report
from kvoperator.timestamps import utc_now


@dataclass
class Pass:
    """One reconcile pass: the shared inputs, and what the steps find and remember.

    ``memory`` starts as the observed status holds it and is written back by the status step;
    ``operations`` is the store's background operation, which outlives the pass.
    """

    ctx: OperatorContext
    observed: Observed
    operations: OperationSlot
    memory: Memory
    report: Report = field(default_factory=Report)
    now: datetime.datetime = field(default_factory=utc_now)

    @classmethod
    def start(cls, ctx: OperatorContext, observed: Observed, operations: OperationSlot) -> Pass:
        return cls(ctx, observed, operations, Memory.from_status(observed.status))

    @property
    def store(self) -> dict[str, Any]:
        return self.observed.store


@dataclass(frozen=True)
class Step:
    """A reconcile step: it brings one thing to its desired state, and does nothing when it is
    already there. ``name`` labels its metrics and errors."""

    name: str
    run: Callable[[Pass], Awaitable[None]]

"""Long single-register histories that are linearizable by construction, for the checker's tests.

Sessions call one after the other, each waiting for its previous call; every call that takes effect
gets a linearization point, and the value each read returns is the register's value at its point.
Indeterminate writes take effect up to ``info_delay`` seconds after their invocation, or never,
like a timed-out write that a hint delivers later; failed calls have no effect.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from e2e.chaos.history import Op, OpKind, Outcome
from tests.chaos.builders import op


@dataclass(frozen=True)
class Shape:
    """How a generated history looks. The defaults resemble the hottest key of a soak run."""

    sessions: int = 4
    read_fraction: float = 0.7
    delete_fraction: float = 0.1
    mean_duration: float = 0.004
    mean_think: float = 0.02
    info: float = 0.01  # share of writes that time out (they take effect later, or never)
    info_delay: float = 3.0
    fail: float = 0.01  # share of calls that fail (no effect)
    slow: float = 0.002  # share of calls that take ``slow_duration``, so that the others pile up
    slow_duration: float = 2.0


def linearizable(n: int, seed: int, shape: Shape | None = None, key: str = "k") -> list[Op]:
    """``n`` calls on one key, linearizable, sorted by invocation."""
    shape = shape or Shape()
    rng = random.Random(seed)
    free_at = [rng.random() * shape.mean_think for _ in range(shape.sessions)]
    points: list[tuple[float, Op]] = []
    ops: list[Op] = []
    for i in range(n):
        session = min(range(shape.sessions), key=free_at.__getitem__)
        invoke = free_at[session] + rng.expovariate(1 / shape.mean_think)
        slow = rng.random() < shape.slow
        duration = shape.slow_duration if slow else rng.expovariate(1 / shape.mean_duration)
        complete = invoke + duration
        free_at[session] = complete
        kind: OpKind = "read"
        if rng.random() >= shape.read_fraction:
            kind = "delete" if rng.random() < shape.delete_fraction else "write"
        outcome: Outcome = "ok"
        point = rng.uniform(invoke, complete)
        if rng.random() < shape.fail:
            outcome, point = "fail", math.inf
        elif kind != "read" and rng.random() < shape.info:
            outcome = "info"
            point = invoke + rng.uniform(0, shape.info_delay) if rng.random() < 0.5 else math.inf
        value = f"s{session}-{i}" if kind == "write" else None
        call = op(kind, value, invoke, complete, outcome, key=key, session=session)
        ops.append(call)
        if point < math.inf:
            points.append((point, call))
    replay(points)
    return sorted(ops, key=lambda c: (c.invoke, c.id))


def replay(points: list[tuple[float, Op]]) -> None:
    """Make each read return the register's value at its linearization point: each call with the
    point where it takes effect, in any order; calls that never do are left out."""
    register: str | None = None
    for _, call in sorted(points, key=lambda p: p[0]):
        if call.kind == "read":
            call.value = register
        else:
            register = call.written


def quiescent(ops: list[Op]) -> list[int]:
    """Indexes (in ``ops``, sorted by invocation) of the calls invoked after every acknowledged
    call before them had returned: where a history can be cut."""
    out: list[int] = []
    horizon = -math.inf
    for i, call in enumerate(ops):
        if call.invoke > horizon:
            out.append(i)
        if call.outcome == "ok":
            horizon = max(horizon, call.complete)
    return out

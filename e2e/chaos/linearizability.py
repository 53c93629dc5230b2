"""Linearizability of a single-register history, per key: Wing & Gong's search with Lowe's
memoisation, in the style of porcupine.

The model is a register holding a value or "absent" (``None``), absent at the start:

* a write sets it to its value, a delete sets it to absent; a read returns it.

Which operations take part:

* ``ok`` reads, writes and deletes, between their invoke and complete times;
* ``info`` (indeterminate) writes and deletes, with a complete time of +infinity: they may take
  effect at any point after their invocation, or never (never is the same as "after everything");
  those that no read observed are dropped first, which changes no verdict (see ``_prune``);
* failed operations are dropped; a failed read observed nothing.

The search walks the history in time order, trying to linearize each pending call whose effect the
model accepts; it backtracks when it meets the return of an operation it has not linearized yet. A
set of ``(operations linearized, register value)`` already explored is not explored again. A key's
history is linearizable when every ``ok`` operation could be placed.

Bounds: a key with more than ``max_ops`` operations, a search past ``deadline``, or a memo larger than
``max_states`` gives the verdict ``unknown`` naming the bound. It never passes silently.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from e2e.chaos.history import INFO, OK, Op

Verdict = Literal["ok", "violation", "unknown"]

DEFAULT_MAX_OPS = 4000
DEFAULT_MAX_STATES = 2_000_000


@dataclass
class KeyResult:
    key: str
    verdict: Verdict
    ops: int
    reason: str = ""
    states: int = 0
    # For a violation: the operations that show it (the one that could not be placed, the newest
    # ones placed before it, and those concurrent with it).
    evidence: list[Op] = field(default_factory=list)


@dataclass
class Result:
    verdict: Verdict
    keys: list[KeyResult]
    seconds: float

    @property
    def violations(self) -> list[KeyResult]:
        return [k for k in self.keys if k.verdict == "violation"]

    @property
    def unknown(self) -> list[KeyResult]:
        return [k for k in self.keys if k.verdict == "unknown"]

    def summary(self) -> str:
        counts = {v: sum(1 for k in self.keys if k.verdict == v) for v in ("ok", "violation", "unknown")}
        text = (
            f"{self.verdict.upper()}: {len(self.keys)} keys, {sum(k.ops for k in self.keys)} ops, "
            f"{counts['ok']} linearizable, {counts['violation']} not, {counts['unknown']} unknown "
            f"({self.seconds:.2f}s)"
        )
        for k in self.keys:
            if k.verdict != "ok":
                text += f"\n  {k.key}: {k.verdict}: {k.reason}"
        return text


def _participates(op: Op) -> bool:
    if op.outcome == OK:
        return True
    return op.outcome == INFO and op.is_write


def _complete(op: Op) -> float:
    return op.complete if op.outcome == OK else math.inf


def _concurrent(a: Op, b: Op) -> bool:
    return a.invoke <= _complete(b) and b.invoke <= _complete(a)


def _prune(ops: list[Op]) -> list[Op]:
    """Drop the indeterminate writes that no read observed, sorted by invocation.

    Such a write can always be placed just before the next write (or after everything), where no
    read sees it; and a linearization with it is one without it. Keeping it would only multiply the
    states to explore (each one may or may not have happened). An indeterminate delete is kept if
    any read that could follow it returned "absent"."""
    read_values = {op.value for op in ops if op.kind == "read"}
    absent_reads = [op.complete for op in ops if op.kind == "read" and op.value is None]
    kept = [
        op
        for op in ops
        if op.outcome == OK
        or (op.kind == "write" and op.value in read_values)
        or (op.kind == "delete" and any(end > op.invoke for end in absent_reads))
    ]
    return sorted(kept, key=lambda o: (o.invoke, o.id))


def check_key(
    key: str,
    history: Iterable[Op],
    *,
    max_ops: int = DEFAULT_MAX_OPS,
    deadline: float = math.inf,
    max_states: int = DEFAULT_MAX_STATES,
) -> KeyResult:
    """Check one key's operations. ``deadline`` is on ``time.monotonic()``."""
    ops = _prune([op for op in history if _participates(op)])
    n = len(ops)
    if n > max_ops:
        return KeyResult(key, "unknown", n, f"bound hit: {n} operations, more than the {max_ops} allowed")
    # A read of a value that no write could have produced needs no search.
    written: dict[str | None, float] = {None: -math.inf}
    for op in ops:
        if op.is_write:
            written[op.written] = min(written.get(op.written, math.inf), op.invoke)
    for op in ops:
        if op.kind == "read" and (op.value not in written or written[op.value] > op.complete):
            return KeyResult(
                key,
                "violation",
                n,
                f"read #{op.id} returned {op.value!r}, which no write invoked before it could have written",
                evidence=[op],
            )
    if n == 0:
        return KeyResult(key, "ok", 0)

    # Entries 0..n-1 are calls, n..2n-1 are returns; a doubly linked list in time order, with a head
    # sentinel at index 2n. Calls sort before returns at equal times (equal times count as overlap).
    events = sorted(
        [(op.invoke, 0, i) for i, op in enumerate(ops)] + [(_complete(op), 1, i) for i, op in enumerate(ops)]
    )
    head = 2 * n
    nxt = [-1] * (2 * n + 1)
    prv = [-1] * (2 * n + 1)
    order = [head] + [i if kind == 0 else n + i for _, kind, i in events]
    for a, b in itertools.pairwise(order):
        nxt[a] = b
        prv[b] = a
    infinite = [_complete(op) == math.inf for op in ops]

    def lift(i: int) -> None:
        for e in (i, n + i):
            nxt[prv[e]] = nxt[e]
            if nxt[e] != -1:
                prv[nxt[e]] = prv[e]

    def unlift(i: int) -> None:
        for e in (n + i, i):
            nxt[prv[e]] = e
            if nxt[e] != -1:
                prv[nxt[e]] = e

    state: str | None = None
    linearized = 0
    cache: set[tuple[int, str | None]] = set()
    stack: list[tuple[int, str | None]] = []  # (op index, state before it)
    best: list[int] = []
    ok_total = sum(1 for op in ops if op.outcome == OK)
    steps = 0
    entry = nxt[head]
    while entry != -1:
        steps += 1
        if steps % 1024 == 1 and time.monotonic() > deadline:
            return KeyResult(key, "unknown", n, "bound hit: out of time", states=len(cache))
        if entry < n:  # a call: try to linearize it now
            op = ops[entry]
            if op.is_write:
                accepted, new_state = True, op.written
            else:
                accepted, new_state = op.value == state, state
            if accepted:
                mask = linearized | (1 << entry)
                if (mask, new_state) not in cache:
                    cache.add((mask, new_state))
                    if len(cache) > max_states:
                        return KeyResult(
                            key, "unknown", n, f"bound hit: more than {max_states} states", states=len(cache)
                        )
                    stack.append((entry, state))
                    linearized, state = mask, new_state
                    lift(entry)
                    if len(stack) > len(best):
                        best = [i for i, _ in stack]
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
            continue
        # A return: its operation must have been linearized before this point.
        if infinite[entry - n]:
            # Only indeterminate operations are left: they may take effect later, or never.
            return KeyResult(key, "ok", n, states=len(cache))
        if not stack:
            return _violation(key, ops, best, ok_total, len(cache))
        index, state = stack.pop()
        linearized &= ~(1 << index)
        unlift(index)
        entry = nxt[index]
    return KeyResult(key, "ok", n, states=len(cache))


def _violation(key: str, ops: list[Op], best: list[int], ok_total: int, states: int) -> KeyResult:
    placed = set(best)
    stuck = min(
        (i for i, op in enumerate(ops) if op.outcome == OK and i not in placed),
        key=lambda i: ops[i].complete,
    )
    culprit = ops[stuck]
    before = [ops[i] for i in best[-4:]]
    overlapping = [
        op for i, op in enumerate(ops) if i != stuck and i not in best[-4:] and _concurrent(op, culprit)
    ]
    evidence = sorted(
        {op.id: op for op in [*before, culprit, *overlapping[:8]]}.values(), key=lambda o: o.invoke
    )
    placed_ok = sum(1 for i in best if ops[i].outcome == OK)
    reason = (
        f"no linearization: at most {placed_ok} of {ok_total} acknowledged operations can be ordered; "
        f"none places {culprit.describe()}"
    )
    return KeyResult(key, "violation", len(ops), reason, states=states, evidence=evidence)


def check(
    ops: Iterable[Op],
    *,
    max_ops_per_key: int = DEFAULT_MAX_OPS,
    time_limit: float = 60.0,
    max_states: int = DEFAULT_MAX_STATES,
) -> Result:
    """Check every key of a history (each key is its own register)."""
    started = time.monotonic()
    deadline = started + time_limit
    per_key: dict[str, list[Op]] = {}
    for op in ops:
        per_key.setdefault(op.key, []).append(op)
    results = [
        check_key(key, key_ops, max_ops=max_ops_per_key, deadline=deadline, max_states=max_states)
        for key, key_ops in sorted(per_key.items())
    ]
    if any(r.verdict == "violation" for r in results):
        verdict: Verdict = "violation"
    elif any(r.verdict == "unknown" for r in results):
        verdict = "unknown"
    else:
        verdict = "ok"
    return Result(verdict, results, time.monotonic() - started)

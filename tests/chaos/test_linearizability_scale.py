"""The linearizability checker at scale: it cuts each key's history at quiescent points and carries
the register's possible states across each cut. Cutting must never change a verdict, so:

* on thousands of small random histories (ties, overlaps, repeated values, deletes, indeterminate
  and failed calls) it agrees with a brute-force search that knows nothing of cuts, pruning or
  memoisation;
* long histories (tens of thousands of calls on one key) that are linearizable by construction
  pass within a time limit, and the same histories with one violation injected (right after a
  cut, deep inside a long piece, early or late, through an indeterminate write) fail.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import pytest

from e2e.chaos import linearizability
from e2e.chaos.history import Op, OpKind, Outcome
from tests.chaos.builders import op
from tests.chaos.registers import Shape, linearizable, quiescent, replay

# Only a guard against a runaway search, far above the 4-9 s a long check takes on a quiet machine:
# the checker's state cap bounds its work deterministically, and how fast it runs is bench work,
# not something a test on a busy machine should decide (an "unknown" verdict fails the test).
TIME_LIMIT = 240.0


def brute_force(ops: list[Op]) -> bool:
    """Whether some order of the calls is a legal register history that respects real time: ok
    calls placed between their invoke and complete, indeterminate writes anywhere after their
    invoke or nowhere, failed calls nowhere."""
    calls = [c for c in ops if c.outcome == "ok" or (c.outcome == "info" and c.is_write)]
    end = [c.complete if c.outcome == "ok" else math.inf for c in calls]

    @functools.cache
    def place(left: frozenset[int], value: str | None) -> bool:
        if all(calls[i].outcome == "info" for i in left):
            return True
        for i in left:
            call = calls[i]
            if any(end[j] < call.invoke for j in left if j != i):
                continue  # another call left returned before this one started
            if call.kind == "read" and call.value != value:
                continue
            if place(left - {i}, call.written if call.is_write else value):
                return True
        return False

    return place(frozenset(range(len(calls))), None)


OUTCOMES: tuple[Outcome, ...] = ("ok", "info", "fail")


@dataclass(frozen=True)
class Small:
    """How small random histories look."""

    weights: tuple[int, int, int]  # of ok, indeterminate and failed calls
    most: int  # calls
    span: int  # the latest invocation time
    longest: int = 3  # the longest call


def small_history(rng: random.Random, small: Small) -> list[Op]:
    """Calls on integer times (so ties happen), values from a small set (so they repeat), made
    linearizable by construction; then, in 7 of 10, one read gets another value."""
    ops: list[Op] = []
    points: list[tuple[float, Op]] = []
    for _ in range(rng.randint(1, small.most)):
        invoke = float(rng.randint(0, small.span))
        complete = invoke + rng.randint(0, small.longest)
        kind: OpKind = rng.choice(["read", "read", "write", "write", "delete"])
        outcome = rng.choices(OUTCOMES, small.weights)[0]
        call = op(kind, rng.choice("abc") if kind == "write" else None, invoke, complete, outcome)
        ops.append(call)
        if outcome == "ok":
            points.append((rng.uniform(invoke, complete), call))
        elif outcome == "info" and rng.random() < 0.6:
            points.append((invoke + rng.uniform(0, 8), call))
    replay(points)
    reads = [c for c in ops if c.kind == "read"]
    if reads and rng.random() < 0.7:  # a value written before, so that only the search can tell
        read = rng.choice(reads)
        other = {None} | {c.value for c in ops if c.kind == "write" and c.invoke <= read.complete}
        read.value = rng.choice(sorted(other - {read.value}, key=str) or [None])
    return ops


def carries_indeterminate(ops: list[Op]) -> bool:
    """Whether an indeterminate call starts before the last quiescent point: one that the checker
    must carry, in flight, across a cut."""
    ordered = sorted(ops, key=lambda c: (c.invoke, c.id))
    last_cut = ordered[quiescent(ordered)[-1]].invoke
    return any(c.outcome == "info" and c.is_write and c.invoke < last_cut for c in ordered)


@pytest.mark.parametrize(
    "small",
    [Small((6, 2, 1), 9, 14), Small((3, 3, 1), 9, 14), Small((4, 2, 1), 11, 30), Small((4, 2, 1), 9, 20, 10)],
    ids=["mostly-acknowledged", "many-indeterminate", "spread-out", "long-calls"],
)
def test_cutting_agrees_with_a_brute_force_search_on_small_histories(small: Small) -> None:
    rng = random.Random(20261207)
    seen: Counter[str] = Counter()
    for _ in range(10_000):
        ops = small_history(rng, small)
        expected = "ok" if brute_force(ops) else "violation"
        result = linearizability.check(ops)
        assert result.verdict == expected, "\n".join(
            c.describe() for c in sorted(ops, key=lambda c: c.invoke)
        )
        if result.keys[0].pieces > 1:  # it was cut (a violation found without a search has 0 pieces)
            seen[f"cut, {expected}"] += 1
            if carries_indeterminate(ops):
                seen[f"carried, {expected}"] += 1
    # Every kind of case, in numbers: the comparison means something.
    assert min(seen.values()) > 100, seen


def long_history(seed: int, shape: Shape | None = None) -> list[Op]:
    return linearizable(30_000, seed, shape)


def check(ops: list[Op]) -> linearizability.KeyResult:
    (result,) = linearizability.check(ops, time_limit=TIME_LIMIT).keys
    return result


@pytest.mark.parametrize(
    "shape",
    [
        Shape(),
        # Many timed-out writes and deletes, applied up to 10 s later or never: many in flight.
        Shape(info=0.05, info_delay=10.0, delete_fraction=0.3),
        # Six sessions and more slow calls: long pieces.
        Shape(sessions=6, slow=0.01, mean_duration=0.01),
    ],
    ids=["soak-like", "indeterminate", "long-pieces"],
)
def test_long_linearizable_histories_pass(shape: Shape) -> None:
    result = check(long_history(1, shape))
    assert result.verdict == "ok", result.reason
    assert result.ops > 25_000
    assert result.pieces > 100
    assert result.longest_piece > 100  # it did not only pass because every piece was trivial


def last_acknowledged(ops: list[Op], kinds: tuple[OpKind, ...], before: float) -> Op:
    """The acknowledged call of one of ``kinds`` invoked last among those that returned before
    ``before``."""
    done = (c for c in ops if c.outcome == "ok" and c.kind in kinds and c.complete < before)
    return max(done, key=lambda c: c.invoke)


def inject_stale_read(ops: list[Op], at: int) -> Op:
    """Make the read ``ops[at]`` return the value of an acknowledged write W that another
    acknowledged write or delete W2 followed in real time (W, then W2, then the read). Values are
    unique, so no order lets the read see W's value: a violation that only the search can find."""
    read = ops[at]
    assert read.kind == "read" and read.outcome == "ok"
    newer = last_acknowledged(ops, ("write", "delete"), read.invoke)
    read.value = last_acknowledged(ops, ("write",), newer.invoke).value
    return read


def first_read(ops: list[Op], indexes: Iterable[int]) -> int:
    return next(i for i in indexes if ops[i].kind == "read" and ops[i].outcome == "ok")


def after_a_cut(ops: list[Op], fraction: float) -> int:
    """An acknowledged read that starts a piece, about ``fraction`` into the history."""
    cuts = quiescent(ops)
    return first_read(ops, cuts[int(len(cuts) * fraction) :])


def inside_the_longest_piece(ops: list[Op]) -> int:
    """An acknowledged read in the middle of the longest stretch without a quiescent point."""
    start, end = max(itertools.pairwise([*quiescent(ops), len(ops)]), key=lambda p: p[1] - p[0])
    assert end - start > 100
    return first_read(ops, range((start + end) // 2, end))


@pytest.mark.parametrize(
    "fraction", [0.01, 0.5, 0.99, None], ids=["cut-1%", "cut-50%", "cut-99%", "long-piece"]
)
def test_one_stale_read_in_a_long_history_is_found(fraction: float | None) -> None:
    """Right after a cut (early, midway, at the end), or deep inside the longest piece."""
    ops = long_history(2)
    read = inject_stale_read(
        ops, inside_the_longest_piece(ops) if fraction is None else after_a_cut(ops, fraction)
    )
    result = check(ops)
    assert result.verdict == "violation", result.reason
    assert read in result.evidence, result.reason


def test_an_indeterminate_write_undone_much_later_is_found() -> None:
    """A timed-out write X was read (so it took effect); an acknowledged write followed that read;
    thousands of calls later a read returns X's value again: X would have to take effect twice.
    That late read keeps X's value alive at every cut in between, so a checker that kept X in
    flight after it took effect, or forgot that it had, would pass the history."""
    ops = long_history(3, Shape(info=0.05))
    first_reads = {c.value: c for c in reversed(ops) if c.kind == "read" and c.outcome == "ok"}
    lost = next(
        c
        for c in ops
        if c.kind == "write" and c.outcome == "info" and c.value in first_reads and c.invoke > 10
    )
    newer = min(
        (c for c in ops if c.is_write and c.outcome == "ok" and c.invoke > first_reads[lost.value].complete),
        key=lambda c: c.invoke,
    )
    late = next(c for c in ops if c.kind == "read" and c.outcome == "ok" and c.invoke > newer.complete + 100)
    assert sum(1 for c in ops if newer.complete < c.invoke < late.invoke) > 1000
    late.value = lost.value
    result = check(ops)
    assert result.verdict == "violation", result.reason
    assert late in result.evidence, result.reason

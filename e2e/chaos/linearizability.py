"""Linearizability of a single-register history, per key: Wing & Gong's search with Lowe's
memoisation, in the style of porcupine, run piece by piece between quiescent points.

The model is a register holding a value or "absent" (``None``), absent at the start:

* a write sets it to its value, a delete sets it to absent; a read returns it.

Which operations take part:

* ``ok`` reads, writes and deletes, between their invoke and complete times;
* ``info`` (indeterminate) writes and deletes, with a complete time of +infinity: they may take
  effect at any point after their invocation, or never (never is the same as "after everything");
  those that no read observed are dropped first, which changes no verdict (see ``_prune``);
* failed operations are dropped; a failed read observed nothing.

**Pieces.** A key's history is cut before each operation invoked after every ``ok`` operation
before it returned: a quiescent point. Every linearization places all ``ok`` operations of one
piece before those of the next, so the pieces are checked one after the other, each from every state
the register can be in at its cut. A state is the register's value and the multiset of values that
indeterminate operations invoked before the cut, and not applied, may still write: those stay in
flight across every cut, to be applied in a later piece or never. The states at a cut are reduced
without changing any verdict (each step is argued at ``_carry``): a pending value that no later read
returns is dropped; a register value that no later read returns becomes ``HIDDEN``; and a state
whose pending multiset another state with the same value contains is dropped.

**Search in one piece.** The search walks the piece in time order, trying to linearize each pending
call whose effect the model accepts; it backtracks when it meets the return of an operation it has
not linearized yet. A set of ``(operations linearized, register value)`` already explored is not
explored again. An indeterminate call is applied only together with a read that returns its value
(see ``_search``). In every piece but the last, the search goes on after a success, to collect every
state the piece can end in; in the last one a single success is enough. A key's history is
linearizable when every piece can end in at least one state.

Bounds: a key with more than ``max_ops`` operations, a search past ``deadline``, or a memo larger than
``max_states`` in one piece gives the verdict ``unknown`` naming the bound. It never passes silently.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from e2e.chaos.history import INFO, OK, Op

Verdict = Literal["ok", "violation", "unknown"]

# A guard on memory, far above any key of a chaos run: the search's cost grows with the number of
# pieces and with the longest piece, not with the square of the key's length.
DEFAULT_MAX_OPS = 1_000_000
DEFAULT_MAX_STATES = 2_000_000


class _Hidden:
    """The value of a register that no later read returns; a read never matches it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<a value no later read returns>"


HIDDEN: Final = _Hidden()

Value = str | None
Register = Value | _Hidden
# Values that indeterminate operations started before a cut may still write, with their counts.
Pending = tuple[tuple[Value, int], ...]
State = tuple[Register, Pending]


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
    pieces: int = 0  # quiescent pieces the key's history was cut into
    longest_piece: int = 0  # operations in the longest one
    seconds: float = 0.0


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
        if self.keys:
            busiest = max(self.keys, key=lambda k: k.ops)
            text += (
                f"; busiest key {busiest.key}: {busiest.ops} ops in {busiest.pieces} pieces "
                f"(longest {busiest.longest_piece}), {busiest.seconds:.2f}s"
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
    any read that could follow it (one that returned no earlier than the delete started; equal
    times overlap) returned "absent"."""
    read_values = {op.value for op in ops if op.kind == "read"}
    absent_reads = [op.complete for op in ops if op.kind == "read" and op.value is None]
    kept = [
        op
        for op in ops
        if op.outcome == OK
        or (op.kind == "write" and op.value in read_values)
        or (op.kind == "delete" and any(end >= op.invoke for end in absent_reads))
    ]
    return sorted(kept, key=lambda o: (o.invoke, o.id))


def _cut(ops: Sequence[Op]) -> list[list[Op]]:
    """Split operations sorted by invocation at quiescent points: a piece starts at an operation
    invoked after every ``ok`` operation before it returned (strictly: equal times overlap).
    Indeterminate operations never return, so they never hold a cut back; they are carried."""
    pieces: list[list[Op]] = []
    horizon = -math.inf
    for op in ops:
        if not pieces or op.invoke > horizon:
            pieces.append([])
        pieces[-1].append(op)
        if op.outcome == OK:
            horizon = max(horizon, op.complete)
    return pieces


def _pending(values: Iterable[Value]) -> Pending:
    return tuple(sorted(Counter(values).items(), key=lambda vc: (vc[0] is not None, vc[0] or "")))


def _contains(big: Pending, small: Pending) -> bool:
    have = dict(big)
    return all(have.get(v, 0) >= c for v, c in small)


def _carry(
    ends: Iterable[tuple[Register, list[Value]]], last_read: dict[Value, int], piece: int
) -> list[State]:
    """The states after ``piece`` that later pieces need, from the ends it can reach: (register,
    values of the indeterminate operations not applied yet). ``last_read`` maps each value to the
    last piece with a read of it. Each reduction keeps the verdict exact:

    * A pending value that no later read returns is dropped: applying it later puts the register,
      until the next write, in a value that no read returns, so no read falls there, and the same
      order without it is a linearization too ("never" is allowed).
    * A register value that no later read returns becomes ``HIDDEN``: reads compare values for
      equality and no later one matches any of them; writes overwrite them alike.
    * ``(v, P)`` is dropped when some ``(v, Q)`` has ``Q`` containing ``P``: from ``(v, Q)`` every
      continuation of ``(v, P)`` works, by never applying what ``Q`` has more.
    """

    def live(value: Register) -> bool:
        return not isinstance(value, _Hidden) and last_read.get(value, -1) > piece

    by_register: dict[Register, set[Pending]] = {}
    for value, unapplied in ends:
        register = value if live(value) else HIDDEN
        by_register.setdefault(register, set()).add(_pending(v for v in unapplied if live(v)))
    states: list[State] = []
    for register, options in by_register.items():
        kept: list[Pending] = []
        for p in sorted(options, key=lambda p: -sum(c for _, c in p)):
            if not any(_contains(q, p) for q in kept):
                kept.append(p)
        states += [(register, p) for p in kept]
    return sorted(states, key=repr)  # the same order in every run, whatever the hash seed


@dataclass
class _Call:
    """One operation of a piece's search: a real one, or one carried in flight across the cut."""

    invoke: float
    complete: float  # +inf for indeterminate ones: they need not be linearized
    is_write: bool
    value: Value  # written (a delete writes None) or read
    op: Op | None  # None for carried ones


@dataclass
class _Search:
    ends: set[tuple[Register, int]]  # (register, mask of linearized calls) where the piece can end
    best: list[int]  # the longest sequence of calls placed
    states: int
    bound: str = ""  # set when a bound stopped the search


def _calls(piece: list[Op], pending: Pending) -> list[_Call]:
    carried = [
        _Call(-math.inf, math.inf, True, value, None) for value, count in pending for _ in range(count)
    ]
    return carried + [
        _Call(op.invoke, _complete(op), op.is_write, op.written if op.is_write else op.value, op)
        for op in piece
    ]


def _search(
    calls: list[_Call], start: Register, *, want_all: bool, deadline: float, max_states: int
) -> _Search:
    """Wing & Gong's search over one piece from one state, memoised on (calls linearized, value).
    With ``want_all`` it collects every end; otherwise it stops at the first.

    Indeterminate calls are only ever applied just before a read that returns their value, and
    together with it. That loses no linearization: in one where an indeterminate write is followed
    by anything else (another write, or nothing), removing it leaves a linearization too. Which one
    of several such calls with the same value it applies does not matter either: each is possible
    now, and the others stay possible until the end."""
    n = len(calls)
    # Entries 0..n-1 are calls, n..2n-1 are returns; a doubly linked list in time order, with a head
    # sentinel at index 2n. Calls sort before returns at equal times (equal times count as overlap).
    events = sorted(
        [(c.invoke, 0, i) for i, c in enumerate(calls)] + [(c.complete, 1, i) for i, c in enumerate(calls)]
    )
    head = 2 * n
    nxt = [-1] * (2 * n + 1)
    prv = [-1] * (2 * n + 1)
    order = [head] + [i if kind == 0 else n + i for _, kind, i in events]
    for a, b in itertools.pairwise(order):
        nxt[a] = b
        prv[b] = a
    indeterminate: dict[Value, list[int]] = {}
    for i, c in enumerate(calls):
        if c.complete == math.inf:
            indeterminate.setdefault(c.value, []).append(i)

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

    def applicable(value: Value, linearized: int) -> int:
        """An indeterminate call that writes ``value`` and may take effect now, or -1: one invoked
        no later than the first return still in the list."""
        e = nxt[head]
        while e != -1 and e < n:
            e = nxt[e]
        horizon = math.inf if e == -1 else calls[e - n].complete
        return next(
            (
                i
                for i in indeterminate.get(value, ())
                if not linearized >> i & 1 and calls[i].invoke <= horizon
            ),
            -1,
        )

    state = start
    linearized = 0
    cache: set[tuple[int, Register]] = set()
    stack: list[
        tuple[int, int, Register]
    ] = []  # (call, indeterminate call applied with it or -1, state before)
    result = _Search(set(), [], 0)
    steps = 0
    entry = nxt[head]
    while True:
        steps += 1
        if steps % 1024 == 1 and time.monotonic() > deadline:
            result.bound = "out of time"
            break
        if entry != -1 and entry < n:  # a call: try to linearize it now
            call = calls[entry]
            applied = -1
            if call.complete == math.inf:
                accepted = False  # indeterminate: only with a read of its value, below
            elif call.is_write or call.value == state:
                accepted = True
            else:
                applied = applicable(call.value, linearized)
                accepted = applied != -1
            if accepted:
                mask = linearized | (1 << entry)
                if applied != -1:
                    mask |= 1 << applied
                new_state: Register = call.value if call.is_write or applied != -1 else state
                if (mask, new_state) not in cache:
                    cache.add((mask, new_state))
                    if len(cache) > max_states:
                        result.bound = f"more than {max_states} states"
                        break
                    stack.append((entry, applied, state))
                    linearized, state = mask, new_state
                    if applied != -1:
                        lift(applied)
                    lift(entry)
                    if len(stack) > len(result.best):
                        result.best = [i for e, a, _ in stack for i in (a, e) if i != -1]
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
            continue
        # The end, or a return: its operation must have been linearized before this point.
        if entry == -1 or calls[entry - n].complete == math.inf:
            # Every ok operation is placed; indeterminate ones may take effect later, or never.
            result.ends.add((state, linearized))
            if not want_all:
                break
        if not stack:
            break
        index, applied, state = stack.pop()
        linearized &= ~((1 << index) | (1 << applied if applied != -1 else 0))
        unlift(index)
        if applied != -1:
            unlift(applied)
        entry = nxt[index]
    result.states = len(cache)
    return result


def check_key(
    key: str,
    history: Iterable[Op],
    *,
    max_ops: int = DEFAULT_MAX_OPS,
    deadline: float = math.inf,
    max_states: int = DEFAULT_MAX_STATES,
) -> KeyResult:
    """Check one key's operations. ``deadline`` is on ``time.monotonic()``."""
    started = time.monotonic()
    result = _check_key(key, history, max_ops=max_ops, deadline=deadline, max_states=max_states)
    result.seconds = time.monotonic() - started
    return result


def _check_key(
    key: str, history: Iterable[Op], *, max_ops: int, deadline: float, max_states: int
) -> KeyResult:
    ops = _prune([op for op in history if _participates(op)])
    n = len(ops)
    if n > max_ops:
        return KeyResult(key, "unknown", n, f"bound hit: {n} operations, more than the {max_ops} allowed")
    # A read of a value that no write could have produced needs no search.
    written: dict[Value, float] = {None: -math.inf}
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

    pieces = _cut(ops)
    last_read = {op.value: i for i, piece in enumerate(pieces) for op in piece if op.kind == "read"}
    states: list[State] = [(None, ())]
    explored = 0
    longest = max(len(p) for p in pieces)

    def verdict(v: Verdict, reason: str = "", evidence: list[Op] | None = None) -> KeyResult:
        return KeyResult(key, v, n, reason, explored, evidence or [], len(pieces), longest)

    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        ends: list[tuple[Register, list[Value]]] = []
        tried: list[tuple[list[_Call], _Search]] = []
        budget = max_states  # for each piece, whatever the number of states it starts from
        for register, pending in states:
            calls = _calls(piece, pending)
            search = _search(calls, register, want_all=not last, deadline=deadline, max_states=budget)
            explored += search.states
            budget -= search.states
            if search.bound:
                return verdict("unknown", f"bound hit: {search.bound}")
            tried.append((calls, search))
            indeterminate = [j for j, c in enumerate(calls) if c.complete == math.inf]
            for value, mask in search.ends:
                ends.append((value, [calls[j].value for j in indeterminate if not mask >> j & 1]))
            if last and ends:
                break
        if not ends:
            reason, evidence = _violation(ops, pieces[:i], states, tried)
            return verdict("violation", reason, evidence)
        if not last:
            states = _carry(ends, last_read, i)
    return verdict("ok")


def _violation(
    ops: list[Op], before: list[list[Op]], states: list[State], tried: list[tuple[list[_Call], _Search]]
) -> tuple[str, list[Op]]:
    """The reason and evidence for a piece that no state at its cut could get through: the search
    that got furthest, the first acknowledged operation it could not place, the newest ones placed
    before it (in earlier pieces too), and those concurrent with it."""
    calls, search = max(tried, key=lambda t: len(t[1].best))
    placed = [c.op for c in (calls[i] for i in search.best) if c.op is not None]
    placed_ids = {op.id for op in placed}
    piece = [c.op for c in calls if c.op is not None]
    culprit = min(
        (op for op in piece if op.outcome == OK and op.id not in placed_ids), key=lambda op: op.complete
    )
    newest = placed[-4:]
    if len(newest) < 4:  # the writes that decided what the register could hold at the cut
        earlier = [op for p in before for op in p if op.is_write]
        newest = sorted(earlier, key=lambda op: op.complete)[len(newest) - 4 :] + newest
    shown = {op.id for op in newest}
    overlapping = [
        op for op in piece if op is not culprit and op.id not in shown and _concurrent(op, culprit)
    ]
    evidence = sorted(
        {op.id: op for op in [*newest, culprit, *overlapping[:8]]}.values(), key=lambda o: o.invoke
    )
    ok_total = sum(1 for op in ops if op.outcome == OK)
    placed_ok = sum(1 for p in before for op in p if op.outcome == OK) + sum(
        1 for op in placed if op.outcome == OK
    )
    reason = (
        f"no linearization: at most {placed_ok} of {ok_total} acknowledged operations can be ordered; "
        f"none places {culprit.describe()}"
    )
    if before:
        cut = min(op.invoke for op in piece)
        values = sorted({repr(register) for register, _ in states})
        reason += (
            f" (every acknowledged operation before {cut:.3f} had returned, and the register could then hold "
            f"{' or '.join(values[:5])}{' or ...' if len(values) > 5 else ''})"
        )
    return reason, evidence


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

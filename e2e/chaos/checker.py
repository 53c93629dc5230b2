"""The history checker: lost writes, convergence, read-your-writes and linearizability.

Each check is a pure function of recorded data (a :class:`History`, the final values read at ``ALL``,
per-node partition digests), so it can be unit-tested on hand-made histories and re-run on a saved
one. See docs/chaos.md for the rules, stated exactly.

**No lost writes.** Deletes are writes of "absent". A write (or delete) ``X`` of key ``k`` *may be
final* unless some acknowledged write ``Y`` of ``k`` was invoked after ``X`` completed (an
indeterminate ``X`` never completes). The initial "absent" may be final only if no write of ``k`` was
acknowledged. After healing, the value read at ``ALL`` must come from a write that may be final.
Otherwise every acknowledged write invoked after the final value's write completed is lost.

**Read-your-writes** (sessions at QUORUM, ALL or LINEARIZABLE). After a session's acknowledged write
``W`` of ``k`` (version ``vW``), each of its successful reads of ``k`` must return a version ``>= vW``;
or "absent" when ``W`` was a delete, or when some delete of ``k`` (acknowledged with a version above
``vW``, or indeterminate) was invoked before the read completed.

**Convergence.** For every partition, every replica that the membership assigns to it reports the
same digest and record count. Data a node keeps for partitions it does not replicate is ignored.

**Linearizability** of the keys that only LINEARIZABLE sessions touch: see ``linearizability``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from e2e.chaos import linearizability
from e2e.chaos.history import INFO, OK, History, Op
from kvnode.core.placement import Placement

STRONG_LEVELS = ("QUORUM", "ALL", "LINEARIZABLE")

Digests = Mapping[str, Mapping[int, tuple[bytes, int]]]


@dataclass
class Violation:
    check: str
    key: str
    message: str
    ops: list[Op] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"[{self.check}] {self.key}: {self.message}"]
        lines += [f"    {op.describe()}" for op in self.ops]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "key": self.key,
            "message": self.message,
            "ops": [op.to_json() for op in self.ops],
        }


@dataclass
class LostWrites:
    violations: list[Violation]
    lost: list[Op]
    keys_checked: int


def _end(op: Op) -> float:
    return op.complete if op.outcome == OK else math.inf


def check_lost_writes(history: History, final: Mapping[str, str | None] | None = None) -> LostWrites:
    """Compare each key's final value (read at ALL after healing) with its acknowledged writes."""
    final = history.final if final is None else final
    violations: list[Violation] = []
    lost: list[Op] = []
    checked = 0
    for key, ops in sorted(history.by_key().items()):
        writes = [op for op in ops if op.is_write and op.outcome in (OK, INFO)]
        acked = [op for op in writes if op.outcome == OK]
        if not writes:
            continue
        if key not in final:
            violations.append(Violation("lost-writes", key, "no final value was read for this key"))
            continue
        checked += 1
        value = final[key]
        latest_ack = max(acked, key=lambda o: o.complete, default=None)

        def followers(end: float, acked: list[Op] = acked) -> list[Op]:
            return [y for y in acked if y.invoke > end]

        if value is None:
            deletes = [x for x in writes if x.kind == "delete"]
            if not acked or any(not followers(_end(x)) for x in deletes):
                continue
            # Absent, but every delete (if any) was followed by an acknowledged write.
            newest_delete = max(deletes, key=_end, default=None)
            gone = followers(_end(newest_delete)) if newest_delete else acked
            lost += gone
            violations.append(
                Violation(
                    "lost-writes",
                    key,
                    f"final value is absent, but {len(gone)} acknowledged write(s) came after "
                    + ("the last delete" if newest_delete else "the start, and no delete was ever issued"),
                    ([newest_delete] if newest_delete else []) + gone[-3:],
                )
            )
            continue
        source = next((x for x in writes if x.kind == "write" and x.value == value), None)
        if source is None:
            violations.append(
                Violation(
                    "lost-writes",
                    key,
                    f"final value {value!r} was not written by any acknowledged or indeterminate write",
                    [latest_ack] if latest_ack else [],
                )
            )
            continue
        gone = followers(_end(source))
        if gone:
            lost += gone
            violations.append(
                Violation(
                    "lost-writes",
                    key,
                    f"final value {value!r} comes from a write that completed before {len(gone)} "
                    "acknowledged write(s) were invoked: they were lost",
                    [source, *gone[-3:]],
                )
            )
    return LostWrites(violations, lost, checked)


def check_read_your_writes(history: History, levels: Iterable[str] = STRONG_LEVELS) -> list[Violation]:
    """Every session at a strong level reads (at least) its own acknowledged writes."""
    strong = set(levels)
    deletes: dict[str, list[Op]] = {}
    for op in history.ops:
        if op.kind == "delete" and op.outcome in (OK, INFO):
            deletes.setdefault(op.key, []).append(op)
    sessions: dict[int, list[Op]] = {}
    for op in history.ops:
        sessions.setdefault(op.session, []).append(op)
    violations: list[Violation] = []
    for ops in sessions.values():
        ops.sort(key=lambda o: o.invoke)
        last_write: dict[str, Op] = {}
        for op in ops:
            if op.level not in strong or op.outcome != OK:
                continue
            if op.is_write:
                last_write[op.key] = op
                continue
            own = last_write.get(op.key)
            if own is None or own.version is None:
                continue
            if op.value is not None:
                if op.version is None or tuple(op.version) < tuple(own.version):
                    violations.append(
                        Violation(
                            "read-your-writes",
                            op.key,
                            f"session {op.session} read version {op.version} after its own write "
                            f"of version {own.version}",
                            [own, op],
                        )
                    )
                continue
            if own.kind == "delete":
                continue
            newer_delete = [
                d
                for d in deletes.get(op.key, [])
                if d.invoke < op.complete
                and (d.outcome == INFO or (d.version is not None and tuple(d.version) > tuple(own.version)))
            ]
            if not newer_delete:
                violations.append(
                    Violation(
                        "read-your-writes",
                        op.key,
                        f"session {op.session} read 'absent' after its own write {own.value!r}, "
                        "and no later delete could explain it",
                        [own, op],
                    )
                )
    return violations


def check_convergence(digests: Digests, placement: Placement) -> list[Violation]:
    """Every replica of every partition reports the same (digest, records)."""
    violations: list[Violation] = []
    for p in range(placement.partitions):
        old, new = placement.write_sets(p)
        replicas = [r for r in dict.fromkeys(old + new) if r in digests]
        seen = {r: digests[r].get(p) for r in replicas}
        if len(set(seen.values())) > 1:
            detail = ", ".join(
                f"{r}: {'missing' if v is None else f'{v[0].hex()[:12]}/{v[1]} records'}"
                for r, v in seen.items()
            )
            violations.append(Violation("convergence", f"partition {p}", f"replicas differ: {detail}"))
    missing = [r for r in placement.membership.old_view if r not in digests]
    if missing:
        violations.append(
            Violation("convergence", "nodes", f"no digests from {', '.join(missing)}: cannot compare them")
        )
    return violations


@dataclass
class CheckResult:
    counts: dict[str, int]
    lost_writes: LostWrites
    read_your_writes: list[Violation]
    convergence: list[Violation] | None
    linearizability: linearizability.Result | None

    @property
    def violations(self) -> list[Violation]:
        out = list(self.lost_writes.violations) + list(self.read_your_writes)
        out += self.convergence or []
        if self.linearizability is not None:
            for k in self.linearizability.violations:
                out.append(Violation("linearizability", k.key, k.reason, k.evidence))
        return out

    @property
    def ok(self) -> bool:
        """No violation, and no check that could not decide."""
        lin_ok = self.linearizability is None or self.linearizability.verdict == "ok"
        return not self.violations and lin_ok

    @property
    def linearizability_verdict(self) -> str:
        return "not checked" if self.linearizability is None else self.linearizability.verdict


def outcome_counts(ops: Iterable[Op]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for op in ops:
        counts[op.outcome] += 1
        counts[f"{op.kind}:{op.outcome}"] += 1
    counts["total"] = sum(counts[o] for o in (OK, "fail", INFO))
    return dict(sorted(counts.items()))


def check_history(
    history: History,
    *,
    digests: Digests | None = None,
    placement: Placement | None = None,
    linearizable: bool = True,
    lin_max_ops_per_key: int = linearizability.DEFAULT_MAX_OPS,
    lin_time_limit: float = 60.0,
) -> CheckResult:
    """Run every check that the data allows. Linearizability covers keys that only LINEARIZABLE
    operations touched."""
    lin: linearizability.Result | None = None
    if linearizable:
        by_key = history.by_key()
        lin_ops = [op for ops in by_key.values() if all(o.level == "LINEARIZABLE" for o in ops) for op in ops]
        if lin_ops:
            lin = linearizability.check(
                lin_ops, max_ops_per_key=lin_max_ops_per_key, time_limit=lin_time_limit
            )
    convergence = None
    if digests is not None and placement is not None:
        convergence = check_convergence(digests, placement)
    return CheckResult(
        counts=outcome_counts(history.ops),
        lost_writes=check_lost_writes(history),
        read_your_writes=check_read_your_writes(history),
        convergence=convergence,
        linearizability=lin,
    )

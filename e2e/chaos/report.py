"""What a chaos run shows a person: counts, violations with their operations, throughput over time
(PNG, faults shaded), latency percentiles and the longest unavailability window."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from e2e.chaos.checker import CheckResult
from e2e.chaos.history import OK, History, Op


@dataclass
class Window:
    start: float
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start


@dataclass
class Stats:
    duration: float
    ops: int
    ok: int
    throughput: float  # successful ops per second over the whole run
    p50_ms: float
    p99_ms: float
    unavailable: Window  # longest span with no successful operation at all
    session_stall: Window  # longest span one session went without a successful operation

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["unavailable"]["length"] = self.unavailable.length
        data["session_stall"]["length"] = self.session_stall.length
        return data


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def longest_gap(times: Sequence[float], start: float, end: float) -> Window:
    """The longest interval within [start, end] that holds none of ``times``."""
    points = [start, *sorted(t for t in times if start <= t <= end), end]
    best = Window(start, start)
    for a, b in itertools.pairwise(points):
        if b - a > best.length:
            best = Window(a, b)
    return best


def throughput_between(ops: Sequence[Op], start: float, end: float) -> float:
    """Successful operations per second that completed within [start, end)."""
    if end <= start:
        return 0.0
    return sum(1 for op in ops if op.outcome == OK and start <= op.complete < end) / (end - start)


def stats(history: History, start: float | None = None, end: float | None = None) -> Stats:
    ops = history.ops
    start = 0.0 if start is None else start
    end = history.duration if end is None else end
    ok = [op for op in ops if op.outcome == OK]
    latencies = [(op.complete - op.invoke) * 1000 for op in ok]
    unavailable = longest_gap([op.complete for op in ok], start, end)
    stall = Window(start, start)
    for session in {op.session for op in ops}:
        gap = longest_gap([op.complete for op in ok if op.session == session], start, end)
        if gap.length > stall.length:
            stall = gap
    return Stats(
        duration=end - start,
        ops=len(ops),
        ok=len(ok),
        throughput=throughput_between(ops, start, end) if end > start else 0.0,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        unavailable=unavailable,
        session_stall=stall,
    )


def _stats_and_faults(history: History, st: Stats) -> list[str]:
    lines = [
        f"throughput: {st.throughput:.0f} ok ops/s over {st.duration:.1f}s; "
        f"latency p50 {st.p50_ms:.1f} ms, p99 {st.p99_ms:.1f} ms",
        f"longest unavailability window: {st.unavailable.length:.2f}s "
        f"({st.unavailable.start:.2f}-{st.unavailable.end:.2f}); longest single-session stall "
        f"{st.session_stall.length:.2f}s",
    ]
    if history.faults:
        lines.append("faults:")
        for f in history.faults:
            end = "end" if f.end is None else f"{f.end:.2f}"
            lines.append(f"  {f.start:6.2f}-{end:>6}  {f.kind} {f.target} {f.detail}".rstrip())
    return lines


def render_text(name: str, history: History, result: CheckResult, st: Stats, extra: str = "") -> str:
    c = result.counts
    lines = [
        f"== chaos scenario {name}: {'PASS' if result.ok else 'FAIL'} (seed {history.meta.get('seed')})",
        f"operations: {c.get('total', 0)} total; ok {c.get('ok', 0)}, fail {c.get('fail', 0)}, "
        f"indeterminate {c.get('info', 0)}",
        "  by kind: " + ", ".join(f"{k}={v}" for k, v in c.items() if ":" in k),
        f"lost writes: {len(result.lost_writes.lost)} (keys checked: {result.lost_writes.keys_checked})",
        f"read-your-writes violations: {len(result.read_your_writes)}",
        "convergence: "
        + ("not checked" if result.convergence is None else f"{len(result.convergence)} partitions differ"),
        f"linearizability: {result.linearizability_verdict}"
        + (f" - {result.linearizability.summary()}" if result.linearizability else ""),
        *_stats_and_faults(history, st),
    ]
    if extra:
        lines.append(extra)
    violations = result.violations
    if violations:
        lines.append(f"violations ({len(violations)}):")
        for v in violations[:20]:
            lines.append(v.describe())
        if len(violations) > 20:
            lines.append(f"  ... and {len(violations) - 20} more (see report.json)")
    return "\n".join(lines)


def to_json(
    name: str, history: History, result: CheckResult, st: Stats, extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "scenario": name,
        "ok": result.ok,
        "seed": history.meta.get("seed"),
        "counts": result.counts,
        "lost_writes": len(result.lost_writes.lost),
        "read_your_writes_violations": len(result.read_your_writes),
        "convergence_violations": None if result.convergence is None else len(result.convergence),
        "linearizability": result.linearizability_verdict,
        "stats": st.to_json(),
        "faults": [f.to_json() for f in history.faults],
        "violations": [v.to_json() for v in result.violations],
        **extra,
    }


def plot(history: History, path: Path, title: str, bucket: float = 0.5) -> Path:
    """Throughput over time (successful and unsuccessful ops per second), faults shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max(history.duration, bucket)
    n = math.ceil(end / bucket)
    ok = [0.0] * n
    bad = [0.0] * n
    for op in history.ops:
        i = min(int(op.complete / bucket), n - 1)
        (ok if op.outcome == OK else bad)[i] += 1 / bucket
    xs = [(i + 0.5) * bucket for i in range(n)]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(xs, ok, label="ok ops/s", color="tab:blue")
    ax.plot(xs, bad, label="failed or indeterminate ops/s", color="tab:red", linewidth=0.8)
    colors = {
        "kill -9": "tab:red",
        "pause": "tab:orange",
        "partition": "tab:purple",
        "clock skew": "tab:green",
    }
    labelled: set[str] = set()
    for f in history.faults:
        color = colors.get(f.kind, "tab:gray")
        label = None if f.kind in labelled else f.kind
        labelled.add(f.kind)
        stop = end if f.end is None else f.end
        if stop - f.start > 0.01:
            ax.axvspan(f.start, stop, color=color, alpha=0.15, label=label)
        else:
            ax.axvline(f.start, color=color, linestyle="--", label=label)
        ax.annotate(f.target, (f.start, 0), xytext=(2, 2), textcoords="offset points", fontsize=7)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("operations per second")
    ax.set_title(title)
    ax.set_xlim(0, end)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write(
    directory: Path,
    name: str,
    history: History,
    result: CheckResult,
    st: Stats,
    extra: dict[str, Any] | None = None,
) -> str:
    """Save history.json, report.txt, report.json and throughput.png under ``directory``; returns the
    text report."""
    directory.mkdir(parents=True, exist_ok=True)
    history.save(directory / "history.json")
    extra = extra or {}
    extra_text = "\n".join(f"{k}: {v}" for k, v in extra.items())
    text = render_text(name, history, result, st, extra_text)
    (directory / "report.txt").write_text(text + "\n")
    (directory / "report.json").write_text(json.dumps(to_json(name, history, result, st, extra), indent=2))
    plot(history, directory / "throughput.png", f"{name} (seed {history.meta.get('seed')})")
    return text


def write_incomplete(directory: Path, name: str, history: History, st: Stats, stage: str, error: str) -> str:
    """Save what a run that raised had recorded (history.json, report.txt, report.json marked
    ``"incomplete": true``), so that an errored run leaves its seed and evidence like a failed one.
    The history is not checked: without the final reads every acknowledged write would look lost."""
    directory.mkdir(parents=True, exist_ok=True)
    history.save(directory / "history.json")
    ok = sum(1 for op in history.ops if op.outcome == OK)
    lines = [
        f"== chaos scenario {name}: ERROR, incomplete (seed {history.meta.get('seed')})",
        f"stopped during {stage}: {error}",
        f"operations recorded: {len(history.ops)}; ok {ok} (history not checked)",
        *_stats_and_faults(history, st),
    ]
    text = "\n".join(lines)
    (directory / "report.txt").write_text(text + "\n")
    data = {
        "scenario": name,
        "ok": False,
        "incomplete": True,
        "stage": stage,
        "error": error,
        "seed": history.meta.get("seed"),
        "stats": st.to_json(),
        "faults": [f.to_json() for f in history.faults],
    }
    (directory / "report.json").write_text(json.dumps(data, indent=2))
    return text

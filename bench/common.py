"""What the benchmark scripts share: interleaved rounds, paired ratios, targets and tables.

Drift on a shared machine hits whatever runs at that moment, so cases that are compared run in short
alternating rounds (A B C, C B A, A B C, ...), and a ratio is computed per round from results
measured seconds apart, then summarised by its median over the rounds. Absolute figures are medians
over the rounds too; p50 and p99 are taken over every call of every round.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import Load, LoadGen, Result


@dataclass(frozen=True)
class Case:
    """One row of a table: a label, the load to run, and the server pids whose CPU to report."""

    name: str
    load: Load
    watch: tuple[int, ...] = ()


@dataclass
class Series:
    """The rounds of one case."""

    case: Case
    rounds: list[Result] = field(default_factory=list)

    def median(self, metric: Callable[[Result], float]) -> float:
        return statistics.median(metric(r) for r in self.rounds)

    @property
    def ops(self) -> float:
        return self.median(lambda r: r.ops)

    @property
    def keys(self) -> float:
        return self.median(lambda r: r.keys)

    @property
    def pooled(self) -> Result:
        out = Result(self.case.load)
        for r in self.rounds:
            out.latencies.extend(r.latencies)
        return out

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)

    @property
    def misses(self) -> int:
        return sum(r.misses for r in self.rounds)

    @property
    def first_error(self) -> str:
        return next((r.first_error for r in self.rounds if r.first_error), "")


def interleave(
    gen: LoadGen, cases: Sequence[Case], rounds: int, progress: Callable[[str], None] | None = None
) -> dict[str, Series]:
    """Run every case once per round, reversing the order every other round."""
    series = {c.name: Series(c) for c in cases}
    for n in range(rounds):
        order = list(cases) if n % 2 == 0 else list(reversed(cases))
        for case in order:
            result = gen.run(case.load, case.watch)
            series[case.name].rounds.append(result)
            if progress:
                progress(
                    f"  round {n + 1}/{rounds} {case.name:<28} c={case.load.in_flight:<4} "
                    f"{result.ops:>9,.0f} ops/s {result.keys:>10,.0f} keys/s  "
                    f"p50 {result.p50:7.2f} ms  p99 {result.p99:7.2f} ms"
                    + (f"  errors {result.errors}" if result.errors else "")
                )
    return series


@dataclass(frozen=True)
class Ratio:
    """Per-round ratios of two cases; the median is the figure, the range shows the noise."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    def __str__(self) -> str:
        if len(self.values) < 2:
            return f"{self.median:.2f}x"
        return f"{self.median:.2f}x ({min(self.values):.2f}-{max(self.values):.2f})"


def paired_ratio(a: Series, b: Series, metric: Callable[[Result], float] = lambda r: r.ops) -> Ratio:
    """metric(a) / metric(b) per round, each pair measured in the same round."""
    return Ratio(
        tuple(metric(x) / metric(y) for x, y in zip(a.rounds, b.rounds, strict=True) if metric(y) > 0)
    )


@dataclass(frozen=True)
class Target:
    """``name``: the median of ``measured`` should be at least ``goal``."""

    name: str
    measured: Ratio
    goal: float

    @property
    def met(self) -> bool:
        return self.measured.median >= self.goal

    def row(self) -> list[str]:
        return [self.name, str(self.measured), f">= {self.goal:g}x", "MET" if self.met else "NOT MET"]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> str:
    """A plain fixed-width table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [title] if title else []
    out += [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


RESULT_HEADERS = (
    "case",
    "in flight",
    "ops/s",
    "keys/s",
    "p50 ms",
    "p99 ms",
    "client cpu",
    "server cpu",
    "srv us/op",
    "errors",
)


def result_row(s: Series) -> list[str]:
    pooled = s.pooled
    return [
        s.case.name,
        str(s.case.load.in_flight),
        f"{s.ops:,.0f}",
        f"{s.keys:,.0f}",
        f"{pooled.p50:.2f}",
        f"{pooled.p99:.2f}",
        f"{s.median(lambda r: r.client_cpu):.2f}",
        f"{s.median(lambda r: r.server_cpu):.2f}",
        f"{s.median(lambda r: r.server_cpu / r.ops * 1e6 if r.ops else math.nan):.0f}",
        str(s.errors) + (f" ({s.misses} misses)" if s.misses else ""),
    ]


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="a few seconds in all: checks that it runs")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per comparison")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds measured per round and case")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of unmeasured load first")
    parser.add_argument("--value-size", type=int, default=128, help="bytes per value")
    parser.add_argument("--keys", type=int, default=2000, help="key space (pre-loaded for reads)")
    parser.add_argument(
        "--client-procs", type=int, default=1, help="load generator processes (the same for every target)"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where data directories go (default: a temp dir)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-round progress lines")
    return parser


def smoke_settings(args: argparse.Namespace) -> None:
    if args.smoke:
        args.rounds, args.duration, args.warmup, args.keys = 1, 0.3, 0.1, 200


@contextlib.contextmanager
def work_dir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    # On the real disk, not a tmpfs: fsync must cost what it costs.
    with tempfile.TemporaryDirectory(prefix="kvstore-bench-", dir=os.environ.get("KVSTORE_BENCH_DIR")) as d:
        yield Path(d)


def say(text: str = "") -> None:
    print(text, flush=True)


def progress_printer(quiet: bool) -> Callable[[str], None] | None:
    return None if quiet else lambda line: print(line, file=sys.stderr, flush=True)


def header(what: str, args: argparse.Namespace) -> str:
    return (
        f"{what} -- {time.strftime('%Y-%m-%d %H:%M:%S')} on {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start; {args.rounds} interleaved rounds of "
        f"{args.duration:g}s (+{args.warmup:g}s warm-up) per case, {args.value_size}-byte values, "
        f"{args.keys} keys, {args.client_procs} client process(es)"
    )

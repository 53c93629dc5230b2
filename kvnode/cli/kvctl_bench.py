"""``kvctl bench``: many concurrent tasks on one AsyncKVClient, doing a mix of gets and puts over a
fixed key set, for a duration or an operation count. Prints throughput and p50/p99 latency for
reads and writes, and how the client coalesced them. Progress goes to stderr so that stdout holds
only the result. The client is the library as users get it, coalescing included;
``kvctl --no-coalesce bench`` sends every call alone, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvnode.cli import kvctl_output as out
from kvnode.cli.options import typed
from kvnode.client import AsyncKVClient, KVError
from kvnode.core.units import parse_duration, parse_size, positive_int

if TYPE_CHECKING:
    from kvnode.cli.kvctl_core import Session

PREFILL_BATCH = 500
PROGRESS_EVERY = 0.25
BAR_WIDTH = 30


def _ratio(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{value} must be between 0 and 1")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=typed(positive_int), default=32, help="concurrent tasks")
    parser.add_argument("--value-size", type=typed(parse_size), default=100, help="bytes per value")
    parser.add_argument("--read-ratio", type=typed(_ratio), default=0.5, help="share of gets, 0 to 1")
    parser.add_argument("--keys", type=typed(positive_int), default=1000, help="distinct keys used")
    parser.add_argument("--duration", type=typed(parse_duration), default=10.0, help="how long to run")
    parser.add_argument("--ops", type=typed(positive_int), default=0, help="run this many operations instead")
    parser.add_argument("--key-prefix", default="bench/", help="prefix of the keys written")
    parser.add_argument("--no-prefill", action="store_true", help="do not write every key first")
    parser.add_argument("--no-route", action="store_true", help="do not send keys to their replicas")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


@dataclass
class OpStats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    def summary(self, seconds: float) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

        return {
            "ops": len(ordered),
            "errors": self.errors,
            "ops_per_s": len(ordered) / seconds if seconds > 0 else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        }


@dataclass
class Bench:
    ops: int
    """Stop after this many operations; 0 runs for ``duration`` seconds instead."""
    duration: float
    read_ratio: float
    reads: OpStats = field(default_factory=OpStats)
    writes: OpStats = field(default_factory=OpStats)
    first_error: str = ""
    coalesced: dict[str, float] | None = None
    """Calls, RPCs and calls per RPC of the client's coalescing; None when it was off."""
    started: float = 0.0
    finished: float = 0.0
    issued: int = 0

    @property
    def done(self) -> int:
        r, w = self.reads, self.writes
        return len(r.latencies) + len(w.latencies) + r.errors + w.errors

    def more(self) -> bool:
        """Claim the next operation, if the run is not over."""
        if self.ops:
            self.issued += 1
            return self.issued <= self.ops
        return time.monotonic() - self.started < self.duration

    def fraction(self) -> float:
        if self.ops:
            return min(1.0, self.done / self.ops)
        return min(1.0, (time.monotonic() - self.started) / self.duration)


def _keys(args: argparse.Namespace) -> list[bytes]:
    return [f"{args.key_prefix}{i:08d}".encode() for i in range(args.keys)]


async def _prefill(kv: AsyncKVClient, keys: list[bytes], value: bytes) -> None:
    for i in range(0, len(keys), PREFILL_BATCH):
        await kv.batch_write([(k, value) for k in keys[i : i + PREFILL_BATCH]])


async def _worker(
    kv: AsyncKVClient, bench: Bench, keys: list[bytes], value: bytes, rng: random.Random
) -> None:
    while bench.more():
        key = rng.choice(keys)
        read = rng.random() < bench.read_ratio
        stats = bench.reads if read else bench.writes
        started = time.perf_counter()
        try:
            if read:
                await kv.get(key)
            else:
                await kv.put(key, value)
        except KVError as exc:
            stats.errors += 1
            bench.first_error = bench.first_error or exc.message
            continue
        stats.latencies.append(time.perf_counter() - started)


def _progress_line(bench: Bench) -> str:
    fraction = bench.fraction()
    filled = int(fraction * BAR_WIDTH)
    elapsed = time.monotonic() - bench.started
    rate = bench.done / elapsed if elapsed > 0 else 0.0
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%} {bench.done} ops {rate:,.0f} ops/s"


async def _progress(bench: Bench) -> None:
    """A bar redrawn in place on a terminal; one line a second otherwise (logs, CI)."""
    tty = sys.stderr.isatty()
    last_line = 0.0
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        now = time.monotonic()
        if tty:
            sys.stderr.write("\r" + _progress_line(bench))
        elif now - last_line >= 1.0:
            sys.stderr.write(_progress_line(bench) + "\n")
            last_line = now
        sys.stderr.flush()


async def _run(args: argparse.Namespace, session: Session) -> Bench:
    keys = _keys(args)
    value = os.urandom(args.value_size)
    bench = Bench(args.ops, args.duration, args.read_ratio)
    async with AsyncKVClient(session.endpoints, **session.client_options(route=not args.no_route)) as kv:
        if not args.no_prefill:
            await _prefill(kv, keys, value)
        bench.started = time.monotonic()
        progress = None if args.no_progress else asyncio.create_task(_progress(bench))
        try:
            rng = random.Random()
            await asyncio.gather(*(_worker(kv, bench, keys, value, rng) for _ in range(args.concurrency)))
            bench.finished = time.monotonic()
            stats = kv.coalesce_stats
            if stats is not None:
                bench.coalesced = {"calls": stats.calls, "rpcs": stats.rpcs, "mean_batch": stats.mean_size}
        finally:
            if progress is not None:
                progress.cancel()
                sys.stderr.write(("\r" if sys.stderr.isatty() else "") + _progress_line(bench) + "\n")
    return bench


def report(args: argparse.Namespace, bench: Bench, seconds: float) -> dict[str, Any]:
    reads, writes = bench.reads.summary(seconds), bench.writes.summary(seconds)
    ops = reads["ops"] + writes["ops"]
    return {
        "seconds": seconds,
        "concurrency": args.concurrency,
        "value_size": args.value_size,
        "keys": args.keys,
        "read_ratio": args.read_ratio,
        "ops": ops,
        "errors": reads["errors"] + writes["errors"],
        "ops_per_s": ops / seconds if seconds > 0 else 0.0,
        "read": reads,
        "write": writes,
        "first_error": bench.first_error,
        "coalesced": bench.coalesced,
    }


def _text(result: dict[str, Any]) -> str:
    rows = [
        [
            name,
            r["ops"],
            r["errors"],
            f"{r['ops_per_s']:.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
        ]
        for name, r in (("read", result["read"]), ("write", result["write"]))
    ]
    rows.append(["total", result["ops"], result["errors"], f"{result['ops_per_s']:.0f}", "", ""])
    head = (
        f"{result['ops']} ops in {result['seconds']:.1f}s with {result['concurrency']} tasks "
        f"({result['read_ratio']:.0%} reads, {result['value_size']}-byte values, {result['keys']} keys)"
    )
    batches = result["coalesced"]
    tail = (
        "\ncoalescing off"
        if batches is None
        else f"\n{batches['calls']} calls in {batches['rpcs']} RPCs ({batches['mean_batch']:.1f} per RPC)"
    )
    return head + "\n" + out.table(("OP", "OPS", "ERRORS", "OPS/S", "P50 MS", "P99 MS"), rows) + tail


def run(args: argparse.Namespace, session: Session) -> bool:
    """Run and print the benchmark; False when not one operation succeeded."""
    bench = asyncio.run(_run(args, session))
    result = report(args, bench, bench.finished - bench.started)
    if session.json:
        out.emit_json(result)
    else:
        out.emit_line(_text(result))
    if result["errors"]:
        out.error(f"{result['errors']} operations failed; first: {bench.first_error}")
    return result["ops"] > 0 or not result["errors"]

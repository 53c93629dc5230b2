"""This checkout against another one (the build before a change), side by side in one run.

For each number of requests in flight these run in interleaved rounds, on each build:

- one node (RF=1): ``Get``, durable ``Put`` and ``BatchPut`` (BatchWrite calls of 100 puts);
- three nodes (RF=3): ``QUORUM Put`` and ``QUORUM Get``.

The table gives each case's ratio new/old: the median of the per-round ratios, with the lowest and
highest round, and the server CPU per call of both. A refactoring should read 1.00x within noise
(an A/A run of two identical nodes spreads by about 15%, see README.md).

    git worktree add /tmp/before <commit>       # or any checkout of the old code
    python bench/builds.py --baseline /tmp/before
    python bench/builds.py --baseline /tmp/before --smoke
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import (
    RESULT_HEADERS,
    Case,
    Series,
    base_parser,
    header,
    interleave,
    paired_ratio,
    progress_printer,
    result_row,
    say,
    smoke_settings,
    table,
    work_dir,
)
from bench.loadgen import Load, LoadGen
from bench.targets import kvnode_cluster, pids, preload_kv
from kvnode.api.v1 import types_pb2

QUORUM = types_pb2.CONSISTENCY_QUORUM
BUILDS = ("new", "old")


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--baseline", type=Path, required=True, help="checkout of the build to compare with")
    parser.add_argument("--in-flight", default="16,64", help="comma-separated levels")
    parser.add_argument("--batch", type=int, default=100, help="puts per BatchWrite call")
    args = parser.parse_args(argv)
    smoke_settings(args)
    baseline = args.baseline.resolve()
    if not (baseline / "kvnode" / "__main__.py").exists():
        parser.error(f"--baseline {baseline} is not a checkout of this project (no kvnode/__main__.py)")
    levels = [16] if args.smoke else [int(x) for x in args.in_flight.split(",")]
    progress = progress_printer(args.quiet)
    say(header(f"this build vs {baseline}", args))

    sources = {"new": None, "old": baseline}
    with work_dir(args.work_dir) as root, LoadGen(args.client_procs) as gen:
        singles = {b: kvnode_cluster(root / f"{b}-single", 1, source=sources[b]) for b in BUILDS}
        clusters = {b: kvnode_cluster(root / f"{b}-cluster", 3, source=sources[b]) for b in BUILDS}
        try:
            for build in BUILDS:
                preload_kv(singles[build][0].address, args.keys, args.value_size)
                preload_kv(clusters[build][0].address, args.keys, args.value_size)
            all_series: list[Series] = []
            ratio_rows: list[list[str]] = []
            for level in levels:

                def case(name: str, op: str, build: str, cluster: bool, level: int = level) -> Case:
                    target = clusters[build] if cluster else singles[build]
                    load = Load(
                        op,
                        tuple(target.endpoints),
                        level,
                        args.duration,
                        args.warmup,
                        args.value_size,
                        args.keys,
                        args.batch,
                        QUORUM if cluster else 0,
                    )
                    return Case(f"{name} {build}", load, pids(target))

                kinds = [
                    ("Get", "get", False),
                    ("Put (durable)", "put", False),
                    (f"BatchPut ({args.batch}/call)", "batch_put", False),
                    ("cluster QUORUM Put", "put", True),
                    ("cluster QUORUM Get", "get", True),
                ]
                cases = [case(name, op, build, cluster) for name, op, cluster in kinds for build in BUILDS]
                if progress:
                    progress(f"{level} in flight:")
                series = interleave(gen, cases, args.rounds, progress)
                all_series += series.values()
                for name, op, _ in kinds:
                    new, old = series[f"{name} new"], series[f"{name} old"]
                    metric = (lambda r: r.keys) if op == "batch_put" else (lambda r: r.ops)
                    ratio_rows.append(
                        [
                            name,
                            str(level),
                            str(paired_ratio(new, old, metric)),
                            result_row(new)[8],
                            result_row(old)[8],
                        ]
                    )
        finally:
            for cluster in (*singles.values(), *clusters.values()):
                cluster.close()

    say()
    say(table(RESULT_HEADERS, [result_row(x) for x in all_series], "Absolute figures (medians over rounds):"))
    say()
    say(
        table(
            ("case", "in flight", "new/old", "srv us/op new", "srv us/op old"),
            ratio_rows,
            "Ratios new/old: median of the per-round ratios (lowest-highest round), same run:",
        )
    )
    errors = [f"{x.case.name} @ {x.case.load.in_flight}: {x.first_error}" for x in all_series if x.errors]
    for line in errors:
        say(f"errors: {line}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

"""One kvnode against a bare grpc.aio echo server, side by side in one run (issue 2).

For each number of requests in flight (1, 16, 64, 256) these run in interleaved rounds:

- ``Get echo`` / ``Get node``: single-key reads of pre-loaded keys;
- ``Put echo`` / ``Put node``: single-key puts; the node acknowledges after its group commit (one
  LMDB transaction and one fsync shared by the puts that arrived together);
- ``BatchPut node``: BatchWrite calls of 100 puts each, counted in keys/s.

Targets, as ratios within the run: Get >= 0.9x echo, Put >= 0.8x echo, batch >= 15x unary put in
keys/s. The node is a real ``kvnode`` process (one member, RF=1, 1024 partitions, data on the
machine's disk); the echo server is ``bench/echo_server.py``; the load generator is
``bench/loadgen.py`` in its own process(es), identical for both.

    python bench/single_node.py            # about 6 minutes
    python bench/single_node.py --smoke    # a few seconds: does it run?
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import echo_server
from bench.common import (
    RESULT_HEADERS,
    Case,
    Series,
    Target,
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
from kvnode.testing.processes import free_port

GET_GOAL = 0.9
PUT_GOAL = 0.8
BATCH_GOAL = 15.0


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--in-flight", default="1,16,64,256", help="comma-separated levels")
    parser.add_argument("--batch", type=int, default=100, help="puts per BatchWrite call")
    args = parser.parse_args(argv)
    smoke_settings(args)
    levels = [int(x) for x in args.in_flight.split(",")]
    if args.smoke:
        levels = [16]
    progress = progress_printer(args.quiet)
    say(header("single node vs echo", args))

    with work_dir(args.work_dir) as root:
        echo_address = f"127.0.0.1:{free_port()}"
        echo = echo_server.start(echo_address, args.value_size)
        try:
            with kvnode_cluster(root / "node", 1) as node, LoadGen(args.client_procs) as gen:
                node_address = node[0].address
                preload_kv(node_address, args.keys, args.value_size)
                node_pids = pids(node)
                all_series: list[Series] = []
                targets: list[Target] = []
                ratio_rows: list[list[str]] = []
                for level in levels:

                    def load(op: str, address: str, level: int = level) -> Load:
                        return Load(
                            op,
                            (address,),
                            level,
                            args.duration,
                            args.warmup,
                            args.value_size,
                            args.keys,
                            args.batch,
                        )

                    cases = [
                        Case("Get echo", load("get", echo_address), (echo.pid,)),
                        Case("Get node", load("get", node_address), node_pids),
                        Case("Put echo", load("put", echo_address), (echo.pid,)),
                        Case("Put node (durable)", load("put", node_address), node_pids),
                        Case(
                            f"BatchPut node ({args.batch}/call)", load("batch_put", node_address), node_pids
                        ),
                    ]
                    if progress:
                        progress(f"{level} in flight:")
                    s = interleave(gen, cases, args.rounds, progress)
                    get_echo, get_node, put_echo, put_node, batch = (s[c.name] for c in cases)
                    all_series += [get_echo, get_node, put_echo, put_node, batch]
                    ratios = (
                        paired_ratio(get_node, get_echo),
                        paired_ratio(put_node, put_echo),
                        paired_ratio(batch, put_node, lambda r: r.keys),
                    )
                    ratio_rows.append([str(level), *(str(x) for x in ratios)])
                    targets += [
                        Target(f"Get node / Get echo @ {level}", ratios[0], GET_GOAL),
                        Target(f"Put node / Put echo @ {level}", ratios[1], PUT_GOAL),
                        Target(f"BatchPut / unary Put keys/s @ {level}", ratios[2], BATCH_GOAL),
                    ]
        finally:
            echo.terminate()
            echo.wait(timeout=10)

    say()
    say(table(RESULT_HEADERS, [result_row(x) for x in all_series], "Absolute figures (medians over rounds):"))
    say()
    say(
        table(
            ("in flight", "Get node/echo", "Put node/echo", "BatchPut/Put keys/s"),
            ratio_rows,
            "Ratios: median of the per-round ratios (lowest-highest round), same run:",
        )
    )
    say()
    say(table(("target", "measured (range)", "goal", ""), [t.row() for t in targets], "Targets:"))
    errors = [f"{x.case.name} @ {x.case.load.in_flight}: {x.first_error}" for x in all_series if x.errors]
    for line in errors:
        say(f"errors: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

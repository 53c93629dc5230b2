"""The cost of TLS (issue 12): Get and QUORUM Put over mutual TLS against plaintext, on one node and
on three, in one run.

Four targets run at the same time on loopback: one plaintext node, one mTLS node, three plaintext
nodes (RF=3), and three nodes with mTLS on their client ports and on peer ports (so every replica
call is also encrypted). The load generator uses one channel per endpoint per worker process, as
long-lived clients do: the figures are the cost of encrypting traffic, not of handshakes. Cases
are interleaved in rounds (see bench/README.md).

Target (ratios within the run): every mTLS case >= 0.85x its plaintext twin, at 64 in flight.

    python bench/tls.py             # about 2 minutes
    python bench/tls.py --smoke     # a few seconds: does it run?
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import (
    RESULT_HEADERS,
    Case,
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
from kvnode.api.v1 import types_pb2
from kvnode.core.certs import ADMIN_ROLE
from kvnode.testing.tls import TestPKI

TLS_VS_PLAIN = 0.85
QUORUM = types_pb2.CONSISTENCY_QUORUM


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--in-flight", type=int, default=64, help="requests in flight")
    args = parser.parse_args(argv)
    smoke_settings(args)
    progress = progress_printer(args.quiet)
    say(header("mutual TLS vs plaintext, one node and three", args))

    with work_dir(args.work_dir) as root, ExitStack() as stack:
        pki = TestPKI(root / "pki")
        client = pki.ca.issue("bench", [ADMIN_ROLE])
        tls = (pki.ca.cert, client.cert, client.key)

        def load(op: str, endpoints: list[str], secure: bool) -> Load:
            return Load(
                op,
                tuple(endpoints),
                args.in_flight,
                args.duration,
                args.warmup,
                args.value_size,
                args.keys,
                consistency=QUORUM,
                tls=tls if secure else None,
            )

        targets = {
            "1 node": stack.enter_context(kvnode_cluster(root / "plain1", 1)),
            "1 node mTLS": stack.enter_context(kvnode_cluster(root / "tls1", 1, pki=pki)),
            "3 nodes": stack.enter_context(kvnode_cluster(root / "plain3", 3)),
            "3 nodes mTLS": stack.enter_context(kvnode_cluster(root / "tls3", 3, pki=pki)),
        }
        gen = stack.enter_context(LoadGen(args.client_procs))
        for name, cluster in targets.items():
            preload_kv(cluster.endpoints[0], args.keys, args.value_size, tls=tls if "mTLS" in name else None)
        writes = [
            Case(f"Put {name}", load("put", c.endpoints, "mTLS" in name), pids(c))
            for name, c in targets.items()
        ]
        reads = [
            Case(f"Get {name}", load("get", c.endpoints, "mTLS" in name), pids(c))
            for name, c in targets.items()
        ]
        if progress:
            progress("writes:")
        s = interleave(gen, writes, args.rounds, progress)
        if progress:
            progress("reads:")
        s |= interleave(gen, reads, args.rounds, progress)

    pairs = [(f"{op} {size} mTLS", f"{op} {size}") for op in ("Get", "Put") for size in ("1 node", "3 nodes")]
    goals = [Target(f"{a} / plaintext (QUORUM)", paired_ratio(s[a], s[b]), TLS_VS_PLAIN) for a, b in pairs]
    say()
    say(table(RESULT_HEADERS, [result_row(x) for x in s.values()], "Absolute figures (medians over rounds):"))
    say()
    say(table(("target", "measured (range)", "goal", ""), [t.row() for t in goals], "Targets:"))
    for x in s.values():
        if x.errors:
            say(f"errors: {x.case.name}: {x.errors}, first: {x.first_error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Three kvnodes (RF=3) against one kvnode, and against a 3-member etcd, in one run (issue 3).

Everything runs at the same time on loopback, and the cases are measured in interleaved rounds with
the same load generator, value size and number of requests in flight (64 by default):

- ``single``: one kvnode process (RF=1);
- ``cluster``: three kvnode processes, RF=3, 1024 partitions; requests are spread round-robin over
  the three nodes, and the node that receives a request coordinates it;
- ``etcd``: three members of Debian's etcd (``etcd-server``), started by this script on loopback
  ports with their own data directories; requests are spread over the members the same way.

Writes: single Put, cluster Put at QUORUM (the default) and at LINEARIZABLE, etcd Put (a Raft
commit, fsynced on a quorum of members). Reads of pre-loaded keys: single Get, cluster Get at ONE,
QUORUM and LINEARIZABLE, etcd Range serializable (member-local, may be stale) and linearizable
(ReadIndex through the leader).

Which of ours compares with which of etcd's: QUORUM is what the issue's targets are about, and it is
reported against both etcd read modes. Like for like: our ONE (one replica, may be stale) matches
etcd's serializable read; our LINEARIZABLE read and write (ABD quorum register) match etcd's
linearizable Range and its Put.

Our client library (issue 14) is a target too: one ``AsyncKVClient`` in the load generator's
process with 64 logical calls in flight, coalescing them into BatchWrite/BatchGet RPCs, against
etcd's raw stubs at 64 in flight; and at 1 in flight, with coalescing and without, for its latency.
BatchWrites of 100 keys, 8 in flight, compare the cluster's keys/s with a single node's.

Targets (ratios within the run): cluster Put >= 0.5x single, cluster Get >= 0.7x single, cluster Put
>= 0.5x etcd Put; client QUORUM Put and Get >= 2x etcd Put and linearizable Range; cluster
BatchWrite keys/s >= 0.5x single; client p50 at 1 in flight, coalescing / not, <= 1.05x.

    python bench/cluster.py              # about 3 minutes
    python bench/cluster.py --smoke      # a few seconds: does it run?
    python bench/cluster.py --no-etcd    # without etcd
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
    Ratio,
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
from bench.etcd import EtcdCluster, etcd_binary
from bench.loadgen import Load, LoadGen
from bench.targets import kvnode_cluster, pids, preload_etcd, preload_kv
from kvnode.api.v1 import types_pb2

PUT_VS_SINGLE = 0.5
GET_VS_SINGLE = 0.7
PUT_VS_ETCD = 0.5
CLIENT_VS_ETCD = 2.0
BATCH_VS_SINGLE = 0.5
BATCH_IN_FLIGHT = 8
"""BatchWrites of 100 keys in flight: 800 keys, what 64 coalescing callers per node come to."""

ONE = types_pb2.CONSISTENCY_ONE
QUORUM = types_pb2.CONSISTENCY_QUORUM
LINEARIZABLE = types_pb2.CONSISTENCY_LINEARIZABLE


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--in-flight", type=int, default=64, help="requests in flight")
    parser.add_argument("--no-etcd", action="store_true", help="leave etcd out")
    parser.add_argument("--etcd", default=None, help="path of the etcd binary (default: etcd on PATH)")
    args = parser.parse_args(argv)
    smoke_settings(args)
    use_etcd = not args.no_etcd
    if use_etcd and (args.etcd or etcd_binary()) is None:
        say("etcd is not installed (Debian: apt-get install etcd-server); running without it (--no-etcd)")
        use_etcd = False
    progress = progress_printer(args.quiet)
    say(header(f"3-node cluster vs single node{' vs etcd' if use_etcd else ''}", args))

    def load(
        op: str,
        endpoints: tuple[str, ...],
        consistency: int = 0,
        *,
        in_flight: int = 0,
        coalesce: bool = True,
    ) -> Load:
        return Load(
            op,
            endpoints,
            in_flight or args.in_flight,
            args.duration,
            args.warmup,
            args.value_size,
            args.keys,
            consistency=consistency,
            coalesce=coalesce,
        )

    with work_dir(args.work_dir) as root, ExitStack() as stack:
        single = stack.enter_context(kvnode_cluster(root / "single", 1))
        cluster = stack.enter_context(kvnode_cluster(root / "cluster", 3))
        etcd = stack.enter_context(EtcdCluster(root / "etcd", 3, args.etcd)) if use_etcd else None
        if etcd is not None:
            etcd.start()
        gen = stack.enter_context(LoadGen(args.client_procs))
        one = (single[0].address,)
        three = tuple(cluster.endpoints)
        preload_kv(one[0], args.keys, args.value_size)
        preload_kv(three[0], args.keys, args.value_size)
        single_pids, cluster_pids = pids(single), pids(cluster)

        def one_at_a_time(name: str, op: str) -> list[Case]:
            """The client at 1 call in flight, coalescing and not (its latency must not change)."""
            return [
                Case(f"{name} client x1", load(op, three, QUORUM, in_flight=1), cluster_pids),
                Case(
                    f"{name} client x1 alone",
                    load(op, three, QUORUM, in_flight=1, coalesce=False),
                    cluster_pids,
                ),
            ]

        writes = [
            Case("Put single", load("put", one), single_pids),
            Case("Put cluster QUORUM", load("put", three, QUORUM), cluster_pids),
            Case("Put cluster LINEARIZABLE", load("put", three, LINEARIZABLE), cluster_pids),
            Case("BatchWrite single", load("batch_put", one, in_flight=BATCH_IN_FLIGHT), single_pids),
            Case(
                "BatchWrite cluster QUORUM",
                load("batch_put", three, QUORUM, in_flight=BATCH_IN_FLIGHT),
                cluster_pids,
            ),
            Case("Put client QUORUM", load("client_put", three, QUORUM), cluster_pids),
            Case("Put client LINEARIZABLE", load("client_put", three, LINEARIZABLE), cluster_pids),
            *one_at_a_time("Put", "client_put"),
        ]
        reads = [
            Case("Get single", load("get", one), single_pids),
            Case("Get cluster ONE", load("get", three, ONE), cluster_pids),
            Case("Get cluster QUORUM", load("get", three, QUORUM), cluster_pids),
            Case("Get cluster LINEARIZABLE", load("get", three, LINEARIZABLE), cluster_pids),
            Case("Get client QUORUM", load("client_get", three, QUORUM), cluster_pids),
            *one_at_a_time("Get", "client_get"),
        ]
        if etcd is not None:
            preload_etcd(etcd.endpoints[0], args.keys, args.value_size)
            etcd_pids = tuple(m.process.pid for m in etcd.members if m.process is not None)
            writes.append(Case("etcd Put", load("etcd_put", etcd.endpoints), etcd_pids))
            reads += [
                Case("etcd Range serializable", load("etcd_get_serializable", etcd.endpoints), etcd_pids),
                Case("etcd Range linearizable", load("etcd_get", etcd.endpoints), etcd_pids),
            ]
        if progress:
            progress("writes:")
        s = interleave(gen, writes, args.rounds, progress)
        if progress:
            progress("reads:")
        s |= interleave(gen, reads, args.rounds, progress)

    def r(a: str, b: str) -> Ratio:
        return paired_ratio(s[a], s[b])

    def keys(a: str, b: str) -> Ratio:
        return paired_ratio(s[a], s[b], lambda x: x.keys)

    def p50(a: str, b: str) -> Ratio:
        return paired_ratio(s[a], s[b], lambda x: x.p50)

    ratio_rows = [
        ["cluster Put QUORUM / single Put", str(r("Put cluster QUORUM", "Put single"))],
        ["cluster Get QUORUM / single Get", str(r("Get cluster QUORUM", "Get single"))],
        ["cluster Get ONE / single Get", str(r("Get cluster ONE", "Get single"))],
        [
            "cluster BatchWrite / single BatchWrite, keys/s",
            str(keys("BatchWrite cluster QUORUM", "BatchWrite single")),
        ],
        ["client Put QUORUM / raw Put QUORUM", str(r("Put client QUORUM", "Put cluster QUORUM"))],
        ["client Get QUORUM / raw Get QUORUM", str(r("Get client QUORUM", "Get cluster QUORUM"))],
        ["client Put, 1 in flight: p50 coalescing / not", str(p50("Put client x1", "Put client x1 alone"))],
        ["client Get, 1 in flight: p50 coalescing / not", str(p50("Get client x1", "Get client x1 alone"))],
    ]
    targets = [
        Target("cluster Put QUORUM / single Put", r("Put cluster QUORUM", "Put single"), PUT_VS_SINGLE),
        Target("cluster Get QUORUM / single Get", r("Get cluster QUORUM", "Get single"), GET_VS_SINGLE),
        Target(
            "cluster BatchWrite / single, keys/s",
            keys("BatchWrite cluster QUORUM", "BatchWrite single"),
            BATCH_VS_SINGLE,
        ),
    ]
    if etcd is not None:
        ratio_rows += [
            ["cluster Put QUORUM / etcd Put", str(r("Put cluster QUORUM", "etcd Put"))],
            ["cluster Put LINEARIZABLE / etcd Put", str(r("Put cluster LINEARIZABLE", "etcd Put"))],
            [
                "cluster Get ONE / etcd serializable",
                str(r("Get cluster ONE", "etcd Range serializable")),
            ],
            [
                "cluster Get QUORUM / etcd serializable",
                str(r("Get cluster QUORUM", "etcd Range serializable")),
            ],
            [
                "cluster Get QUORUM / etcd linearizable",
                str(r("Get cluster QUORUM", "etcd Range linearizable")),
            ],
            [
                "cluster Get LINEARIZABLE / etcd linearizable",
                str(r("Get cluster LINEARIZABLE", "etcd Range linearizable")),
            ],
            ["client Put QUORUM / etcd Put", str(r("Put client QUORUM", "etcd Put"))],
            ["client Get QUORUM / etcd linearizable", str(r("Get client QUORUM", "etcd Range linearizable"))],
            ["client Put LINEARIZABLE / etcd Put", str(r("Put client LINEARIZABLE", "etcd Put"))],
        ]
        targets += [
            Target("cluster Put QUORUM / etcd Put", r("Put cluster QUORUM", "etcd Put"), PUT_VS_ETCD),
            Target("client Put QUORUM / etcd Put", r("Put client QUORUM", "etcd Put"), CLIENT_VS_ETCD),
            Target(
                "client Get QUORUM / etcd linearizable",
                r("Get client QUORUM", "etcd Range linearizable"),
                CLIENT_VS_ETCD,
            ),
        ]

    say()
    say(table(RESULT_HEADERS, [result_row(x) for x in s.values()], "Absolute figures (medians over rounds):"))
    say()
    say(
        table(
            ("ratio", "measured"),
            ratio_rows,
            "Ratios: median of the per-round ratios (lowest-highest round), same run:",
        )
    )
    say()
    say(table(("target", "measured (range)", "goal", ""), [t.row() for t in targets], "Targets:"))
    for x in s.values():
        if x.errors:
            say(f"errors: {x.case.name}: {x.errors}, first: {x.first_error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

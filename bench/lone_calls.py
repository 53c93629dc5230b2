"""One call at a time through the client library, coalescing on against off (issue 14).

Coalescing must add nothing when a client has one call in flight. Interleaved rounds of a few
seconds (as ``cluster.py`` does) are too coarse for a few percent on a shared machine, so here two
clients, one with ``coalesce=True`` and one with ``coalesce=False``, take turns call by call
against the same 3-node cluster (RF=3): each pair of calls sees the same machine. Prints p50 and p99
of each and the ratio of the p50s, for QUORUM puts and gets.

    python bench/lone_calls.py               # about a minute
    python bench/lone_calls.py --calls 200   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import say, table, work_dir
from bench.targets import kvnode_cluster
from kvnode.client import AsyncKVClient


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(endpoints: list[str], calls: int, value_size: int) -> list[list[str]]:
    value = os.urandom(value_size)
    async with (
        AsyncKVClient(endpoints, consistency="QUORUM") as on,
        AsyncKVClient(endpoints, consistency="QUORUM", coalesce=False) as off,
    ):
        for kv in (on, off):  # both learn the placement and connect to every node first
            async with asyncio.timeout(10):
                while kv.membership is None:
                    await kv.put(b"lone/warm-up", value)
            for i in range(50):
                await kv.get(b"lone/%d" % i)
        rows = []
        for op in ("put", "get"):
            took: dict[bool, list[float]] = {True: [], False: []}
            for i in range(calls):
                for kv in (on, off) if i % 2 == 0 else (off, on):
                    key = b"lone/%06d" % i
                    started = time.perf_counter()
                    await (kv.put(key, value) if op == "put" else kv.get(key))
                    took[kv is on].append(time.perf_counter() - started)
            p50_on, p50_off = percentile(took[True], 0.5), percentile(took[False], 0.5)
            rows.append(
                [
                    f"QUORUM {op}",
                    f"{p50_on:.2f} / {percentile(took[True], 0.99):.2f}",
                    f"{p50_off:.2f} / {percentile(took[False], 0.99):.2f}",
                    f"{p50_on / p50_off:.3f}x",
                ]
            )
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1000, help="calls per client and operation")
    parser.add_argument("--value-size", type=int, default=128)
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with work_dir(args.work_dir) as root, kvnode_cluster(root / "cluster", 3) as cluster:
        rows = asyncio.run(measure(cluster.endpoints, args.calls, args.value_size))
    say(
        table(
            ("calls, one at a time", "coalescing p50 / p99 ms", "not p50 / p99 ms", "p50 ratio"),
            rows,
            f"{args.calls} calls each, the two clients taking turns:",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

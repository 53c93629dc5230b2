"""A node's peak memory under the requests that used to blow it up, beside the chart's limit.

Each probe runs on freshly started nodes (memory a process has freed is not always given back to
the system, and would count in the next probe's peak), with the high-water marks reset once the
data is loaded (:class:`kvnode.testing.memory.PeakMemory`: the exact ``VmHWM`` and the sampled
anonymous memory of each node's server and writer). The highest node is compared with the chart's
``store.resources.limits.memory`` (``charts/kvstore/values.yaml``).

The probes: the issue's ``BatchGet`` naming one 1 MiB value 1000 times; a ``BatchGet`` of distinct
large values over the batch budget; a hostile peer's ``Replica.Read`` of 1000 large values; a
burst of 5000 ``Get`` s of a 1 MiB value from one client (each answered, the overloaded ones
retried); 256 ``BatchWrite`` s of 4 MiB at once; 256 ``BatchGet`` s just under the budget at once;
and a client that sends 1024 such ``BatchGet`` s and then stops reading (SIGSTOP).

    python bench/memory.py                    # one node and a three-node cluster, about a minute
    python bench/memory.py --nodes 1 --smoke  # a few seconds
    python bench/memory.py --baseline /tmp/before   # the same probes against another checkout too
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc

from bench.common import say, table, work_dir
from bench.targets import kvnode_cluster
from kvnode.api.v1 import kv_pb2, kv_pb2_grpc, replica_pb2, replica_pb2_grpc
from kvnode.client import AsyncKVClient
from kvnode.cluster.clock import from_ms
from kvnode.testing.memory import Peak, PeakMemory
from kvnode.testing.processes import ProcessCluster

MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "charts" / "kvstore" / "values.yaml"
BIG_KEYS = 8
"""Values of 1 MiB written before the probes; the batch budget (4 MiB) holds three of them."""
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def chart_memory_limit(values: Path = VALUES) -> tuple[str, int]:
    """The store's ``resources.limits.memory`` in the chart's values, as written and in bytes."""
    text = values.read_text()
    store = text[text.index("\nstore:") :]
    limits = store[store.index("limits:") :]
    found = re.search(r"memory:\s*(\d+)(Ki|Mi|Gi)\b", limits)
    if found is None:
        raise SystemExit(f"no store memory limit in {values}")
    number, unit = found.groups()
    return number + unit, int(number) << {"Ki": 10, "Mi": 20, "Gi": 30}[unit]


# -- the probes ------------------------------------------------------------------------------------


def _status_of(exc: BaseException | None) -> str:
    if exc is None:
        return "OK"
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name
    return type(exc).__name__


async def _statuses(calls: Sequence[Awaitable[object]]) -> str:
    """'OK x N, INVALID_ARGUMENT x M' for the calls, run at once."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    counts: dict[str, int] = {}
    for r in results:
        name = _status_of(r if isinstance(r, BaseException) else None)
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name} x{n}" for name, n in sorted(counts.items()))


@dataclass(frozen=True)
class Probe:
    name: str
    run: Callable[[ProcessCluster, int], Coroutine[Any, Any, str]]


def _kv(cluster: ProcessCluster) -> contextlib.AbstractAsyncContextManager[grpc.aio.Channel]:
    return grpc.aio.insecure_channel(cluster[0].address, options=CHANNEL_OPTIONS)


async def _idle(cluster: ProcessCluster, scale: int) -> str:
    await asyncio.sleep(0.5)
    return "-"


async def _same_value_1000_times(cluster: ProcessCluster, scale: int) -> str:
    async with _kv(cluster) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        return await _statuses([stub.BatchGet(kv_pb2.BatchGetRequest(keys=[b"big/0"] * 1000))])


async def _distinct_values_over_budget(cluster: ProcessCluster, scale: int) -> str:
    async with _kv(cluster) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        keys = [b"big/%d" % n for n in range(BIG_KEYS)]
        return await _statuses([stub.BatchGet(kv_pb2.BatchGetRequest(keys=keys)) for _ in range(8)])


async def _peer_read(cluster: ProcessCluster, scale: int) -> str:
    now = from_ms(time.time_ns() // 1_000_000)
    header = replica_pb2.RequestHeader(sender="intruder", hlc=now)
    request = replica_pb2.ReadRequest(header=header, keys=[b"big/%d" % (n % BIG_KEYS) for n in range(1000)])
    async with _kv(cluster) as channel:
        return await _statuses([replica_pb2_grpc.ReplicaStub(channel).Read(request)])


async def _get_burst(cluster: ProcessCluster, scale: int) -> str:
    async with AsyncKVClient([cluster[0].address], timeout=120, route=False) as kv:

        async def one(n: int) -> None:
            entry = await kv.get(b"big/%d" % (n % BIG_KEYS))
            assert entry is not None and len(entry.value) == MIB

        return await _statuses([one(n) for n in range(5000 // scale)])


async def _batch_writes(cluster: ProcessCluster, scale: int) -> str:
    value = os.urandom(MIB - 64)
    async with _kv(cluster) as channel:
        stub = kv_pb2_grpc.KVStub(channel)

        def request(n: int) -> kv_pb2.BatchWriteRequest:
            puts = [kv_pb2.Mutation(key=b"write/%d/%d" % (n, i), value=value) for i in range(4)]
            return kv_pb2.BatchWriteRequest(mutations=puts)

        return await _statuses([stub.BatchWrite(request(n)) for n in range(256 // scale)])


def _under_budget(n: int) -> kv_pb2.BatchGetRequest:
    return kv_pb2.BatchGetRequest(keys=[b"big/%d" % ((n + i) % BIG_KEYS) for i in range(3)])


async def _batch_gets(cluster: ProcessCluster, scale: int) -> str:
    async with _kv(cluster) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        return await _statuses([stub.BatchGet(_under_budget(n)) for n in range(256 // scale)])


STALLED_CLIENT = """
import asyncio, sys
import grpc
from bench.memory import CHANNEL_OPTIONS, _under_budget
from kvnode.api.v1 import kv_pb2_grpc

async def main():
    async with grpc.aio.insecure_channel(sys.argv[1], options=CHANNEL_OPTIONS) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        calls = [stub.BatchGet(_under_budget(n)) for n in range(int(sys.argv[2]))]
        print("sent", flush=True)
        await asyncio.gather(*calls, return_exceptions=True)

asyncio.run(main())
"""


async def _stalled_reader(cluster: ProcessCluster, scale: int) -> str:
    """1024 BatchGets sent, then the client stops reading: answers pile up on the node's side of
    the connection until HTTP/2 flow control holds them back."""
    client = await asyncio.create_subprocess_exec(
        *[sys.executable, "-c", STALLED_CLIENT, cluster[0].address, str(1024 // scale)],
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert client.stdout is not None
        await client.stdout.readline()
        await asyncio.sleep(0.2)
        client.send_signal(signal.SIGSTOP)
        await asyncio.sleep(3.0)  # a measurement window, not a wait for a condition
        return "client stopped for 3 s"
    finally:
        client.kill()
        await client.wait()


PROBES = (
    Probe("idle, after loading", _idle),
    Probe("BatchGet: one 1 MiB value x1000", _same_value_1000_times),
    Probe("BatchGet: 8 x 1 MiB (over budget), 8 at once", _distinct_values_over_budget),
    Probe("Replica.Read: 1000 x 1 MiB (hostile peer)", _peer_read),
    Probe("Get of a 1 MiB value, 5000 at once", _get_burst),
    Probe("BatchWrite of 4 MiB, 256 at once", _batch_writes),
    Probe("BatchGet of 3 MiB, 256 at once", _batch_gets),
    Probe("BatchGet of 3 MiB x1024, client stops reading", _stalled_reader),
)


# -- running them ----------------------------------------------------------------------------------


async def _load(cluster: ProcessCluster) -> None:
    async with AsyncKVClient([cluster[0].address], timeout=60) as kv:
        for n in range(BIG_KEYS):
            await kv.put(b"big/%d" % n, os.urandom(MIB))


@dataclass(frozen=True)
class Row:
    build: str
    nodes: int
    probe: str
    answer: str
    peak: Peak


def measure(cluster: ProcessCluster, probe: Probe, scale: int) -> tuple[str, Peak]:
    """One probe on a freshly started cluster: its answer and the peak it caused."""
    asyncio.run(_load(cluster))
    with PeakMemory([n.pid for n in cluster.nodes]) as watch:
        watch.reset()
        try:
            answer = asyncio.run(probe.run(cluster, scale))
        except Exception as exc:  # noqa: BLE001 - a probe that fails is itself a finding
            answer = f"failed: {type(exc).__name__}: {exc}"[:80]
        time.sleep(0.05)
        peak = watch.read()
    if not all(n.running for n in cluster.nodes):
        answer += "; a node DIED"
    return answer, peak


@contextlib.contextmanager
def nodes(root: Path, size: int, source: Path | None) -> Iterator[ProcessCluster]:
    cluster = kvnode_cluster(root, size, partitions=64, source=source)
    try:
        yield cluster
    finally:
        cluster.close()


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default="1,3", help="cluster sizes, comma-separated (1 and/or 3)")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout to probe as well")
    parser.add_argument("--smoke", action="store_true", help="a tenth of each burst: checks that it runs")
    parser.add_argument("--work-dir", type=Path, default=None, help="where data directories go")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-probe progress lines")
    args = parser.parse_args(argv)
    limit_text, limit = chart_memory_limit()
    builds: dict[str, Path | None] = {"this": None}
    if args.baseline is not None:
        if not (args.baseline / "kvnode" / "__main__.py").exists():
            parser.error(f"--baseline {args.baseline} is not a checkout of this project")
        builds["baseline"] = args.baseline.resolve()
    scale = 10 if args.smoke else 1
    progress: Callable[[str], None] = (
        (lambda _: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    )
    say(
        f"peak memory per node under the probes -- {time.strftime('%Y-%m-%d %H:%M:%S')}, "
        f"chart limit (store.resources.limits.memory) {limit_text}"
    )
    rows: list[Row] = []
    with work_dir(args.work_dir) as root:
        for size in (int(x) for x in args.nodes.split(",")):
            for n, probe in enumerate(PROBES):
                for build, source in builds.items():  # side by side, probe by probe
                    with nodes(root / f"{build}-{size}-{n}", size, source) as cluster:
                        answer, peak = measure(cluster, probe, scale)
                    rows.append(Row(build, size, probe.name, answer, peak))
                    progress(f"  {build} {size} node(s) {probe.name}: {answer}, {_mib(peak.rss)}")
    headers = ["probe", "build", "nodes", "answer", "peak RSS", "peak anon", "of limit"]
    out = [
        [
            r.probe,
            r.build,
            str(r.nodes),
            r.answer,
            _mib(r.peak.rss),
            _mib(r.peak.anon),
            f"{r.peak.rss / limit:.0%}",
        ]
        for r in rows
    ]
    say(
        table(
            headers,
            out,
            title="\nPeak memory of one node (server and writer), the highest of the cluster's nodes",
        )
    )
    over = [r for r in rows if r.build == "this" and r.peak.rss > limit]
    say(f"\nprobes past the chart's {limit_text} limit on this build: {len(over)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

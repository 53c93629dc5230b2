"""A load generator that runs in its own processes.

``LoadGen(procs=P)`` starts P worker processes once (multiprocessing, spawn) and keeps them for the
whole benchmark. ``run(Load(...))`` drives one target with a fixed number of requests in flight for
a fixed time and returns ops/s, p50 and p99 as the client saw them:

- every in-flight slot is a coroutine that sends its next request as soon as the previous answer
  arrives (a closed loop), using grpc.aio raw stubs on one channel per endpoint per process, so the
  client work per request is the same for every target;
- slots are dealt round-robin over the worker processes and over the endpoints;
- requests are built before the clock starts (a pool of pre-built messages with random keys from a
  fixed key space, and a fixed value), so the loop only sends and times;
- after a warm-up, calls that complete inside the measured window are counted and timed;
- each worker reports the CPU its process used in the window, and ``run`` can also report the CPU of
  server processes (from /proc), so a saturated client or server shows in the tables.

Operations: ``put``, ``get`` and ``batch_put`` (``batch`` puts in one BatchWrite) on the kvnode KV
service, or on the echo server, which serves the same methods; ``etcd_put``, ``etcd_get``
(linearizable Range) and ``etcd_get_serializable`` on etcd's KV service.

Run it alone against an address, e.g. ``python bench/loadgen.py --op get 127.0.0.1:7000 -c 64``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc, types_pb2

KV_OPS = ("put", "get", "batch_put")
ETCD_OPS = ("etcd_put", "etcd_get", "etcd_get_serializable")
OPS = KV_OPS + ETCD_OPS
POOL = 512
CALL_TIMEOUT = 10.0
START_LEAD = 0.5


@dataclass(frozen=True)
class Load:
    """One measurement: which operation, where, how many in flight, for how long."""

    op: str
    endpoints: tuple[str, ...]
    in_flight: int
    duration: float = 2.0
    warmup: float = 0.5
    value_size: int = 128
    keys: int = 2000
    batch: int = 100
    consistency: int = 0
    prefix: bytes = b"bench/"
    tls: tuple[bytes, bytes, bytes] | None = None
    """PEM CA, client certificate and key, for a target that serves mutual TLS."""

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}; choose one of {', '.join(OPS)}")
        if self.in_flight < 1 or not self.endpoints:
            raise ValueError("need at least one request in flight and one endpoint")

    @property
    def items_per_call(self) -> int:
        return self.batch if self.op == "batch_put" else 1


@dataclass
class Result:
    load: Load
    calls: int = 0
    errors: int = 0
    misses: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    client_cpu: float = 0.0  # CPU-seconds per second, summed over the worker processes
    server_cpu: float = 0.0  # the same for the watched server processes
    first_error: str = ""

    @property
    def ops(self) -> float:
        """Calls per second."""
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def keys(self) -> float:
        """Keys written or read per second (calls times items per call)."""
        return self.ops * self.load.items_per_call

    def percentile(self, q: float) -> float:
        """Latency in milliseconds at quantile ``q`` (nearest rank)."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    @property
    def p50(self) -> float:
        return self.percentile(0.50)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)

    @classmethod
    def merge_parallel(cls, load: Load, parts: Sequence[Result]) -> Result:
        """Workers that ran at the same time: counts and CPU add up, the window is shared."""
        out = cls(load, seconds=load.duration)
        for part in parts:
            out.calls += part.calls
            out.errors += part.errors
            out.misses += part.misses
            out.latencies.extend(part.latencies)
            out.client_cpu += part.client_cpu
            out.first_error = out.first_error or part.first_error
        return out


# -- the worker side --------------------------------------------------------------------------


def _keys(load: Load, rng: random.Random, n: int) -> list[bytes]:
    return [load.prefix + b"%08d" % rng.randrange(load.keys) for _ in range(n)]


def _requests(load: Load, rng: random.Random) -> list[Any]:
    value = bytes(rng.getrandbits(8) for _ in range(load.value_size))
    level = cast("types_pb2.Consistency.ValueType", load.consistency)
    if load.op == "put":
        return [kv_pb2.PutRequest(key=k, value=value, consistency=level) for k in _keys(load, rng, POOL)]
    if load.op == "get":
        return [kv_pb2.GetRequest(key=k, consistency=level) for k in _keys(load, rng, POOL)]
    if load.op == "batch_put":
        return [
            kv_pb2.BatchWriteRequest(
                mutations=[kv_pb2.Mutation(key=k, value=value) for k in _keys(load, rng, load.batch)],
                consistency=level,
            )
            for _ in range(POOL // 8)
        ]
    from bench.etcd import stubs

    pb2, _ = stubs()
    if load.op == "etcd_put":
        return [pb2.PutRequest(key=k, value=value) for k in _keys(load, rng, POOL)]
    serializable = load.op == "etcd_get_serializable"
    return [pb2.RangeRequest(key=k, serializable=serializable) for k in _keys(load, rng, POOL)]


Call = Callable[..., Awaitable[Any]]


def _method(load: Load, channel: grpc.aio.Channel) -> Call:
    if load.op in KV_OPS:
        stub = kv_pb2_grpc.KVStub(channel)
        methods: dict[str, Call] = {"put": stub.Put, "get": stub.Get, "batch_put": stub.BatchWrite}
        return methods[load.op]
    from bench.etcd import stubs

    _, pb2_grpc = stubs()
    etcd = pb2_grpc.KVStub(channel)
    return etcd.Put if load.op == "etcd_put" else etcd.Range  # type: ignore[no-any-return]


def _found(op: str, response: Any) -> bool:
    if op == "get":
        return bool(response.kv.found)
    if op in ("etcd_get", "etcd_get_serializable"):
        return len(response.kvs) > 0
    return True


class _Worker:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.channels: dict[str, grpc.aio.Channel] = {}

    async def _channel(self, endpoint: str, tls: tuple[bytes, bytes, bytes] | None) -> grpc.aio.Channel:
        channel = self.channels.get(endpoint)
        if channel is None:
            if tls is None:
                channel = grpc.aio.insecure_channel(endpoint)
            else:
                ca, cert, key = tls
                creds = grpc.ssl_channel_credentials(ca, key, cert)
                channel = grpc.aio.secure_channel(endpoint, creds)
            self.channels[endpoint] = channel
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        return channel

    async def drive(self, load: Load, slots: list[int], start_at: float) -> Result:
        rng = random.Random(hash((load.op, slots[0], start_at)))
        requests = _requests(load, rng)
        methods = {e: _method(load, await self._channel(e, load.tls)) for e in load.endpoints}
        result = Result(load, seconds=load.duration)
        clock_offset = time.perf_counter() - time.time()
        window_start = start_at + load.warmup + clock_offset
        window_end = window_start + load.duration
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def slot(index: int) -> None:
            call = methods[load.endpoints[index % len(load.endpoints)]]
            i = rng.randrange(len(requests))
            n = len(requests)
            perf = time.perf_counter
            latencies = result.latencies
            op = load.op
            while True:
                t0 = perf()
                if t0 >= window_end:
                    return
                i += 1
                try:
                    response = await call(requests[i % n], timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    if window_start <= perf() < window_end:
                        result.errors += 1
                        result.first_error = result.first_error or f"{exc.code().name}: {exc.details()}"
                    await asyncio.sleep(0.01)
                    continue
                t1 = perf()
                if window_start <= t1 < window_end:
                    result.calls += 1
                    latencies.append(t1 - t0)
                    if not _found(op, response):
                        result.misses += 1

        async def cpu_probe() -> tuple[float, float]:
            await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
            first = time.process_time()
            await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
            return first, time.process_time()

        probe = asyncio.ensure_future(cpu_probe())
        await asyncio.gather(*(slot(s) for s in slots))
        first, last = await probe
        result.client_cpu = (last - first) / load.duration
        return result

    def close(self) -> None:
        async def close_all() -> None:
            for channel in self.channels.values():
                await channel.close(grace=None)

        self.loop.run_until_complete(close_all())
        self.loop.close()


def _worker_main(conn: Connection) -> None:
    worker = _Worker()
    try:
        while True:
            message = conn.recv()
            if message is None:
                break
            load, slots, start_at = message
            try:
                conn.send(worker.loop.run_until_complete(worker.drive(load, slots, start_at)))
            except Exception as exc:  # noqa: BLE001 - report to the parent instead of dying silently
                conn.send(RuntimeError(f"load worker failed: {type(exc).__name__}: {exc}"))
    finally:
        worker.close()


# -- the parent side --------------------------------------------------------------------------


def _with_children(pids: Iterable[int]) -> list[int]:
    """The processes and their direct children (a kvnode's storage writer is its child)."""
    found = []
    for pid in pids:
        found.append(pid)
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                found.extend(int(child) for child in f.read().split())
        except OSError:
            continue
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time (user + system, all threads) used so far by these processes and their children."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _with_children(pids):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


class LoadGen:
    """Worker processes that drive loads; use as a context manager."""

    def __init__(self, procs: int = 1) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs = procs
        self._conns: list[Connection] = []
        self._workers: list[multiprocessing.process.BaseProcess] = []
        for _ in range(procs):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="loadgen")
            process.start()
            child.close()
            self._conns.append(parent)
            self._workers.append(process)

    def run(self, load: Load, watch: Sequence[int] = ()) -> Result:
        """Drive ``load``; ``watch`` names server pids whose CPU use is reported."""
        shares = [list(range(k, load.in_flight, self.procs)) for k in range(self.procs)]
        start_at = time.time() + START_LEAD
        busy = [(conn, share) for conn, share in zip(self._conns, shares, strict=True) if share]
        for conn, share in busy:
            conn.send((load, share, start_at))
        time.sleep(max(0.0, start_at + load.warmup - time.time()))
        cpu_before = cpu_seconds(watch)
        time.sleep(max(0.0, start_at + load.warmup + load.duration - time.time()))
        cpu_after = cpu_seconds(watch)
        parts: list[Result] = []
        for conn, _ in busy:
            reply = conn.recv()
            if isinstance(reply, Exception):
                raise reply
            parts.append(reply)
        result = Result.merge_parallel(load, parts)
        result.server_cpu = (cpu_after - cpu_before) / load.duration
        return result

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for process in self._workers:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Drive one target and print ops/s, p50 and p99. With several --procs values, "
        "compare client process counts in interleaved rounds (does one client process saturate?)."
    )
    parser.add_argument("endpoints", help="HOST:PORT[,HOST:PORT...]")
    parser.add_argument("--op", choices=OPS, default="get")
    parser.add_argument("-c", "--in-flight", type=int, default=64)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--value-size", type=int, default=128)
    parser.add_argument("--procs", default="1", help="client processes, or a comma-separated list to compare")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (with several --procs)")
    parser.add_argument(
        "--consistency", default="UNSPECIFIED", help="ONE, QUORUM, ALL or LINEARIZABLE (kvnode ops)"
    )
    args = parser.parse_args(argv)
    level = types_pb2.Consistency.Value(f"CONSISTENCY_{args.consistency.upper()}")
    load = Load(
        args.op,
        tuple(args.endpoints.split(",")),
        args.in_flight,
        args.duration,
        value_size=args.value_size,
        consistency=level,
    )
    counts = [int(p) for p in args.procs.split(",")]
    gens = [LoadGen(n) for n in counts]
    try:
        for n in range(args.rounds):
            for gen in gens if n % 2 == 0 else gens[::-1]:
                r = gen.run(load)
                print(
                    f"{load.op} c={load.in_flight} procs={gen.procs}: {r.ops:,.0f} ops/s "
                    f"({r.keys:,.0f} keys/s) p50 {r.p50:.2f} ms p99 {r.p99:.2f} ms errors {r.errors} "
                    f"misses {r.misses} client cpu {r.client_cpu:.2f}"
                    + (f"  first error: {r.first_error}" if r.first_error else ""),
                    flush=True,
                )
    finally:
        for gen in gens:
            gen.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

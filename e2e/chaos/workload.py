"""The chaos workload: concurrent client sessions over the raw gRPC stubs, every call recorded.

By default this is deliberately *not* the high-level client: it never retries and never hides a
failure, so one RPC is one recorded :class:`~e2e.chaos.history.Op` and the history is honest. With
``via="client"`` the sessions call through one shared :class:`~kvnode.client.AsyncKVClient` the way an
application does (coalescing on, routing to replicas, failover), so the checker judges what users
get; one call is still one op, however many RPCs it took or shared. It only needs a list
of ``host:port`` endpoints, so the local process suite and the kind suite (through
``kubectl port-forward``) drive it the same way. Faults are someone else's job.

* Every write writes a value no other write uses: ``s<session>-<seq>``.
* A session runs one call at a time. It sticks to one endpoint, moves to another one after a call
  that failed, and now and then jumps to a random endpoint so that sessions read through nodes other
  than the one they wrote through. An endpoint is *suspect* while a call to it has been waiting longer
  than ``stall_seconds`` and for ``suspect_seconds`` after a call to it failed; sessions avoid
  suspect endpoints when they switch (as a client's health tracking would), unless all are suspect.
* Key mixes: ``uniform``; ``hotcold`` (10% of the keys get 90% of the requests); ``zipf``
  (Zipfian, s=1). Reads and writes are mixed by ``read_fraction``; a share of the writes are deletes.
* Everything random comes from one seeded RNG per session, derived from the run's seed.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import random
import time
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from e2e.chaos.channels import CREDENTIALS, open_channel
from e2e.chaos.history import FAIL, INFO, OK, History, Op, OpKind, Outcome
from kvnode.api.v1 import kv_pb2, kv_pb2_grpc, types_pb2
from kvnode.client import AsyncKVClient
from kvnode.core.errors import KVError

LEVELS: dict[str, types_pb2.Consistency.ValueType] = {
    "ONE": types_pb2.CONSISTENCY_ONE,
    "QUORUM": types_pb2.CONSISTENCY_QUORUM,
    "ALL": types_pb2.CONSISTENCY_ALL,
    "LINEARIZABLE": types_pb2.CONSISTENCY_LINEARIZABLE,
}

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.enable_retries", 0),
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 2_000),
    ("grpc.keepalive_permit_without_calls", 1),
]

VIA = ("stubs", "client")

# The request never left the client: nothing can have been applied.
_NOT_SENT = ("failed to connect to all addresses", "Connection refused", "connect failed")


class Clock:
    """Seconds since the run started, on the monotonic clock; shared by workload and faults."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0


class KeyMix:
    """Which key the next request goes to."""

    def __init__(self, name: str, keys: int) -> None:
        if keys < 1:
            raise ValueError("a key mix needs at least one key")
        self.name = name
        self.keys = keys
        if name == "uniform":
            weights = [1.0] * keys
        elif name == "hotcold":
            hot = max(1, keys // 10)
            cold = keys - hot
            weights = [0.9 / hot] * hot + ([0.1 / cold] * cold if cold else [])
        elif name == "zipf":
            weights = [1.0 / (rank + 1) for rank in range(keys)]
        else:
            raise ValueError(f"unknown key mix {name!r}: choose uniform, hotcold or zipf")
        total = sum(weights)
        running = 0.0
        self._cumulative: list[float] = []
        for w in weights:
            running += w / total
            self._cumulative.append(running)

    def pick(self, rng: random.Random) -> int:
        return min(bisect.bisect_left(self._cumulative, rng.random()), self.keys - 1)


@dataclass
class WorkloadConfig:
    """What the sessions do. ``levels`` are assigned to sessions round-robin; a session uses its
    level for reads and writes. Keys of LINEARIZABLE sessions are kept apart from the others (a
    register is only linearizable if every operation on it is)."""

    sessions: int = 6
    keys: int = 50
    mix: str = "uniform"
    read_fraction: float = 0.5
    delete_fraction: float = 0.1
    levels: tuple[str, ...] = ("QUORUM",)
    seed: int = 0
    rpc_timeout: float = 2.0
    switch_probability: float = 0.05
    suspect_seconds: float = 1.0
    stall_seconds: float = 0.25
    max_ops: int = 200_000
    # Pause between a session's calls (0: flat out). Bounds the history size for long runs.
    think_time: float = 0.0
    key_prefix: str = ""
    # "stubs": one raw RPC per call; "client": the client library as applications use it.
    via: str = "stubs"

    def __post_init__(self) -> None:
        if self.via not in VIA:
            raise ValueError(f"unknown via {self.via!r}: choose from {VIA}")
        unknown = [lvl for lvl in self.levels if lvl not in LEVELS]
        if unknown or not self.levels:
            raise ValueError(f"unknown consistency levels {unknown}: choose from {sorted(LEVELS)}")
        if not 0.0 <= self.read_fraction <= 1.0:
            raise ValueError("read_fraction must be within [0, 1]")
        KeyMix(self.mix, self.keys)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["levels"] = list(self.levels)
        return data


def key_name(prefix: str, level: str, index: int) -> str:
    family = "lin" if level == "LINEARIZABLE" else "lww"
    return f"{prefix}{family}/k{index:04d}"


def classify(kind: OpKind, code: grpc.StatusCode, details: str) -> Outcome:
    """How a failed call ends: ``fail`` if it certainly had no effect, else ``info``."""
    if kind == "read":
        return FAIL
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED):
        return FAIL
    if code == grpc.StatusCode.UNAVAILABLE and any(s in details for s in _NOT_SENT):
        return FAIL
    # UNAVAILABLE from a coordinator ("too few replicas acknowledged") may still have been applied on
    # some replicas; a timeout may have been applied, or may be later. Indeterminate.
    return INFO


@dataclass
class _Session:
    index: int
    level: str
    rng: random.Random
    endpoint: int
    seq: int = 0


@dataclass
class Workload:
    """Run ``config`` against ``endpoints``; the recorded history is in ``history``."""

    endpoints: Sequence[str]
    config: WorkloadConfig
    clock: Clock = field(default_factory=Clock)
    history: History = field(default_factory=History)

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("the workload needs at least one endpoint")
        if not self.config.key_prefix:
            self.config.key_prefix = f"r{os.urandom(3).hex()}/"
        self._mix = KeyMix(self.config.mix, self.config.keys)
        self._next_id = 0
        self._suspect_until = [0.0] * len(self.endpoints)
        self._inflight: list[dict[int, float]] = [{} for _ in self.endpoints]
        self.history.meta.update(
            {
                "seed": self.config.seed,
                "config": self.config.to_json(),
                "endpoints": list(self.endpoints),
                "started_unix": time.time(),
            }
        )

    def keys(self) -> list[str]:
        return sorted({key_name(self.config.key_prefix, lvl, i) for lvl in self.config.levels
                       for i in range(self.config.keys)})  # fmt: skip

    async def run(self, duration: float, stop: asyncio.Event | None = None) -> History:
        """Run the sessions for ``duration`` seconds (or until ``stop`` is set, or ``max_ops``)."""
        stop = stop or asyncio.Event()
        channels = [open_channel(e, CHANNEL_OPTIONS) for e in self.endpoints]
        stubs = [kv_pb2_grpc.KVStub(c) for c in channels]
        # Writes are sent once, as for the stubs: a write retried after an ambiguous failure is two
        # applications of one recorded call, which the history cannot describe.
        client = (
            AsyncKVClient(
                self.endpoints,
                timeout=self.config.rpc_timeout,
                retry_writes=False,
                credentials=CREDENTIALS.get(),
            )
            if self.config.via == "client"
            else None
        )
        deadline = self.clock.now() + duration
        master = random.Random(self.config.seed)
        sessions = [
            _Session(
                index=i,
                level=self.config.levels[i % len(self.config.levels)],
                rng=random.Random(master.getrandbits(64)),
                endpoint=i % len(self.endpoints),
            )
            for i in range(self.config.sessions)
        ]
        try:
            await asyncio.gather(*(self._session(s, stubs, client, deadline, stop) for s in sessions))
        finally:
            if client is not None:
                stats = client.coalesce_stats
                assert stats is not None
                self.history.meta["coalesced"] = {"calls": stats.calls, "rpcs": stats.rpcs}
                await client.close()
            await asyncio.gather(*(c.close(grace=None) for c in channels), return_exceptions=True)
        self.history.meta["duration"] = duration
        self.history.meta["key_prefix"] = self.config.key_prefix
        return self.history

    async def _session(
        self,
        s: _Session,
        stubs: list[kv_pb2_grpc.KVAsyncStub],
        client: AsyncKVClient | None,
        deadline: float,
        stop: asyncio.Event,
    ) -> None:
        cfg = self.config
        while not stop.is_set() and self.clock.now() < deadline and self._next_id < cfg.max_ops:
            if len(stubs) > 1 and s.rng.random() < cfg.switch_probability:
                s.endpoint = self._pick(s.rng.randrange(len(stubs)))
            key = key_name(cfg.key_prefix, s.level, self._mix.pick(s.rng))
            roll = s.rng.random()
            kind: OpKind = (
                "read" if roll < cfg.read_fraction
                else "delete" if s.rng.random() < cfg.delete_fraction
                else "write"
            )  # fmt: skip
            value = None
            if kind == "write":
                s.seq += 1
                value = f"s{s.index}-{s.seq}"
            ok = await self._call(s, stubs, client, key, kind, value)
            if not ok:
                self._suspect_until[s.endpoint] = self.clock.now() + cfg.suspect_seconds
                s.endpoint = self._pick(s.endpoint + 1)
            if cfg.think_time:
                await asyncio.sleep(cfg.think_time * s.rng.uniform(0.5, 1.5))

    def _pick(self, first: int) -> int:
        """The first endpoint from ``first`` on that is not suspect (or ``first`` if all are)."""
        n = len(self.endpoints)
        now = self.clock.now()
        for step in range(n):
            candidate = (first + step) % n
            stalled = any(now - t > self.config.stall_seconds for t in self._inflight[candidate].values())
            if self._suspect_until[candidate] <= now and not stalled:
                return candidate
        return first % n

    async def _call(
        self,
        s: _Session,
        stubs: list[kv_pb2_grpc.KVAsyncStub],
        client: AsyncKVClient | None,
        key: str,
        kind: OpKind,
        value: str | None,
    ) -> bool:
        level = LEVELS[s.level]
        op = Op(
            id=self._next_id,
            session=s.index,
            key=key,
            kind=kind,
            value=value,
            level=s.level,
            invoke=self.clock.now(),
            complete=0.0,
            outcome=INFO,
            endpoint=self.endpoints[s.endpoint] if client is None else "client",
        )
        self._next_id += 1
        self.history.ops.append(op)
        timeout = self.config.rpc_timeout
        inflight = self._inflight[s.endpoint]
        inflight[op.id] = op.invoke
        try:
            if client is not None:
                return await self._record(op, _through_client(client, op))
            return await self._record(op, _through_stub(stubs[s.endpoint], op, level, timeout))
        finally:
            del inflight[op.id]

    async def _record(self, op: Op, call: Awaitable[None]) -> bool:
        """Await ``call`` (which fills in what the node answered) and record how it ended."""
        kind = op.kind
        try:
            await call
        except asyncio.CancelledError:
            op.complete = self.clock.now()
            op.outcome = FAIL if kind == "read" else INFO
            op.error = "cancelled"
            raise
        except (grpc.aio.AioRpcError, KVError) as exc:
            if isinstance(exc, grpc.aio.AioRpcError):
                code, details = exc.code(), exc.details() or ""
            else:
                code, details = exc.code, str(exc)
            op.complete = self.clock.now()
            op.outcome = classify(kind, code, details)
            op.error = f"{code.name}: {details[:200]}"
            return False
        op.complete = self.clock.now()
        op.outcome = OK
        return True


async def _through_stub(
    stub: kv_pb2_grpc.KVAsyncStub, op: Op, level: types_pb2.Consistency.ValueType, timeout: float
) -> None:
    key = op.key.encode()
    if op.kind == "write":
        assert op.value is not None
        request = kv_pb2.PutRequest(key=key, value=op.value.encode(), consistency=level)
        put: kv_pb2.PutResponse = await stub.Put(request, timeout=timeout)
        op.version = (put.version.hlc, put.version.node_id)
    elif op.kind == "delete":
        deleted: kv_pb2.DeleteResponse = await stub.Delete(
            kv_pb2.DeleteRequest(key=key, consistency=level), timeout=timeout
        )
        op.version = (deleted.version.hlc, deleted.version.node_id)
    else:
        got: kv_pb2.GetResponse = await stub.Get(
            kv_pb2.GetRequest(key=key, consistency=level), timeout=timeout
        )
        if got.kv.found:
            op.value = got.kv.value.decode()
            op.version = (got.kv.version.hlc, got.kv.version.node_id)


async def _through_client(client: AsyncKVClient, op: Op) -> None:
    if op.kind == "write":
        assert op.value is not None
        version = (await client.put(op.key, op.value, consistency=op.level)).version
    elif op.kind == "delete":
        version = (await client.delete(op.key, consistency=op.level)).version
    else:
        entry = await client.get(op.key, consistency=op.level)
        if entry is None:
            return
        op.value, version = entry.value.decode(), entry.version
    op.version = (version.hlc, version.node_id)


async def read_final(
    endpoints: Sequence[str],
    keys: Sequence[str],
    *,
    level: str = "ALL",
    timeout: float = 60.0,
    batch: int = 200,
) -> dict[str, str | None]:
    """The value of every key, read at ``level`` (ALL by default) through any endpoint that answers.

    Retries, through the next endpoint each time, until ``timeout``: this is the after-healing read,
    not part of the history. (A read at ALL fails while some replica does not answer in time: a
    node that was cut off or restarted a moment ago, or one slowed down by a loaded machine.)"""
    out: dict[str, str | None] = {}
    started = time.monotonic()
    deadline = started + timeout
    channels = [open_channel(e, CHANNEL_OPTIONS) for e in endpoints]
    try:
        stubs = [kv_pb2_grpc.KVStub(c) for c in channels]
        todo = list(keys)
        attempt = 0
        last_error = ""
        while todo:
            chunk = todo[:batch]
            stub = stubs[attempt % len(stubs)]
            try:
                reply: kv_pb2.BatchGetResponse = await stub.BatchGet(
                    kv_pb2.BatchGetRequest(keys=[k.encode() for k in chunk], consistency=LEVELS[level]),
                    timeout=10.0,
                )
            except grpc.aio.AioRpcError as exc:
                last_error = f"{exc.code().name}: {exc.details()}"
                attempt += 1
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"final read at {level} kept failing, {attempt} attempts in "
                        f"{time.monotonic() - started:.0f}s; the last: {last_error}"
                    ) from None
                await asyncio.sleep(min(0.2 * attempt, 1.0))  # a loaded cluster gets time to catch up
                continue
            for k, kv in zip(chunk, reply.kvs, strict=True):
                out[k] = kv.value.decode() if kv.found else None
            todo = todo[batch:]
    finally:
        await asyncio.gather(*(c.close(grace=None) for c in channels), return_exceptions=True)
    return out

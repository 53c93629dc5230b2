"""The chaos workload: concurrent client sessions over the raw gRPC stubs, every call recorded.

This is deliberately *not* the high-level client: it never retries and never hides a failure, so one
RPC is one recorded :class:`~e2e.chaos.history.Op` and the history is honest. It only needs a list
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from e2e.chaos.channels import open_channel
from e2e.chaos.history import FAIL, INFO, OK, History, Op, OpKind, Outcome
from kvnode.api.v1 import kv_pb2, kv_pb2_grpc, types_pb2

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

    def __post_init__(self) -> None:
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
            await asyncio.gather(*(self._session(s, stubs, deadline, stop) for s in sessions))
        finally:
            await asyncio.gather(*(c.close(grace=None) for c in channels), return_exceptions=True)
        self.history.meta["duration"] = duration
        self.history.meta["key_prefix"] = self.config.key_prefix
        return self.history

    async def _session(
        self, s: _Session, stubs: list[kv_pb2_grpc.KVAsyncStub], deadline: float, stop: asyncio.Event
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
            ok = await self._call(s, stubs, key, kind, value)
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
        self, s: _Session, stubs: list[kv_pb2_grpc.KVAsyncStub], key: str, kind: OpKind, value: str | None
    ) -> bool:
        stub = stubs[s.endpoint]
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
            endpoint=self.endpoints[s.endpoint],
        )
        self._next_id += 1
        self.history.ops.append(op)
        timeout = self.config.rpc_timeout
        inflight = self._inflight[s.endpoint]
        inflight[op.id] = op.invoke
        try:
            return await self._send(stub, op, level, timeout)
        finally:
            del inflight[op.id]

    async def _send(
        self, stub: kv_pb2_grpc.KVAsyncStub, op: Op, level: types_pb2.Consistency.ValueType, timeout: float
    ) -> bool:
        key, kind, value = op.key, op.kind, op.value
        try:
            if kind == "write":
                assert value is not None
                put: kv_pb2.PutResponse = await stub.Put(
                    kv_pb2.PutRequest(key=key.encode(), value=value.encode(), consistency=level),
                    timeout=timeout,
                )
                op.version = (put.version.hlc, put.version.node_id)
            elif kind == "delete":
                deleted: kv_pb2.DeleteResponse = await stub.Delete(
                    kv_pb2.DeleteRequest(key=key.encode(), consistency=level), timeout=timeout
                )
                op.version = (deleted.version.hlc, deleted.version.node_id)
            else:
                got: kv_pb2.GetResponse = await stub.Get(
                    kv_pb2.GetRequest(key=key.encode(), consistency=level), timeout=timeout
                )
                if got.kv.found:
                    op.value = got.kv.value.decode()
                    op.version = (got.kv.version.hlc, got.kv.version.node_id)
        except asyncio.CancelledError:
            op.complete = self.clock.now()
            op.outcome = FAIL if kind == "read" else INFO
            op.error = "cancelled"
            raise
        except grpc.aio.AioRpcError as exc:
            op.complete = self.clock.now()
            op.outcome = classify(kind, exc.code(), exc.details() or "")
            op.error = f"{exc.code().name}: {(exc.details() or '')[:200]}"
            return False
        op.complete = self.clock.now()
        op.outcome = OK
        return True


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

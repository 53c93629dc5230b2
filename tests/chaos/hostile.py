"""A hostile client for the chaos scenarios: beside the workload, it sends every node requests that
must be refused, and records how each one ended.

The probes are the ones of the hostile-client suite (``tests/hostile``), whose helpers build them:
keys and values over the limits, a batch write with bad items among good ones, a batch read that
names one large value more often than the byte budget allows, bytes that do not parse as any
method's request, and, as a peer, a Replica.Read with a clock near 2^64 and a Replica.Apply of a
version an hour ahead. Every probe must end in a *definite refusal*: a status that says the request
was not carried out (never OK, never UNKNOWN or INTERNAL, never a hang), or for Replica.Apply an OK
answer whose one item is refused. Two excuses: a node that was down may fail a call with
UNAVAILABLE (or let it time out) while a fault kept it away (:meth:`Hostile.violations` takes those
windows from the history); and the over-budget BatchGet, which a node can only refuse once its
replicas have told it the value's size, fails as any read does when too few of them answer in time
(:meth:`Hostile.unreached`, counted apart).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc

from e2e.chaos.history import FaultEvent
from e2e.chaos.workload import CHANNEL_OPTIONS, Clock
from kvnode.api.v1 import kv_pb2, kv_pb2_grpc, replica_pb2, replica_pb2_grpc
from kvnode.cluster.clock import from_ms
from kvnode.config import Limits
from tests.hostile.conftest import header
from tests.hostile.test_limits import key
from tests.hostile.test_malformed import GARBAGE, every_method
from tests.hostile.test_peers import NEAR_MAX_CLOCK, record

# Statuses that say "not done, and why": the request was refused, nothing was applied.
REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
# A node that was down may not answer at all, but only within its fault (and this long after it).
DOWN_SLACK_SECONDS = 1.0
BIG_KEY_REPEATS = 5  # a BatchGet naming the 1 MiB value five times asks for 5 MiB, over the 4 MiB budget
CALL_TIMEOUT = 10.0
HOUR_MS = 3_600_000
BATCH_GET = "BatchGet over the byte budget"


@dataclass
class Probe:
    """One hostile request and how it ended, on the scenario's clock."""

    node: int
    name: str
    invoke: float
    complete: float
    code: grpc.StatusCode
    details: str = ""

    def describe(self, endpoints: Sequence[str]) -> str:
        return (
            f"{self.name} to {endpoints[self.node]} at {self.invoke:.3f}-{self.complete:.3f}: "
            f"{self.code.name} {self.details[:200]!r}"
        )


Call = Callable[[], Awaitable[tuple[grpc.StatusCode, str]]]


async def _status(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """How an awaited call ended, with the details (OK and "" when it succeeded)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@dataclass
class Hostile:
    """Sends the probes to every node, one after another per node, for as long as :meth:`run` says.

    ``prefix`` keeps its keys apart from the workload's. :meth:`prepare` writes the one large value
    that the over-budget BatchGet names; :meth:`must_be_absent` lists the keys that only refused
    requests named, which nobody may ever read back."""

    endpoints: Sequence[str]
    clock: Clock
    prefix: str
    limits: Limits = field(default_factory=Limits)
    pause: float = 0.02  # between two probes to one node: hostile, not a load test
    seed: int = 0
    probes: list[Probe] = field(default_factory=list)

    @property
    def big_key(self) -> bytes:
        return f"{self.prefix}big".encode()

    @property
    def too_big_key(self) -> bytes:
        return f"{self.prefix}toobig".encode()

    def must_be_absent(self) -> list[str]:
        """Keys that only refused requests name: the good items of the refused batch, the key of
        the value over the limit, and the keys of the records from the future."""
        return [
            *(f"{self.prefix}batch/{i}" for i in range(3)),
            self.too_big_key.decode(),
            *(f"{self.prefix}future/{n}" for n in range(len(self.endpoints))),
        ]

    async def prepare(self) -> None:
        """Store the value that the over-budget BatchGet names: as large as a value may be."""
        async with grpc.aio.insecure_channel(self.endpoints[0], options=CHANNEL_OPTIONS) as channel:
            await kv_pb2_grpc.KVStub(channel).Put(
                kv_pb2.PutRequest(key=self.big_key, value=b"x" * self.limits.max_value_bytes),
                timeout=30,
            )

    async def run(self, seconds: float) -> None:
        """Probe every node for ``seconds``."""
        deadline = self.clock.now() + seconds
        await asyncio.gather(*(self._node(n, deadline) for n in range(len(self.endpoints))))

    async def _node(self, node: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1_000 + node)
        async with grpc.aio.insecure_channel(self.endpoints[node], options=CHANNEL_OPTIONS) as channel:
            calls = self._calls(node, channel, rng)
            while self.clock.now() < deadline:
                for name, call in calls:
                    if self.clock.now() >= deadline:
                        return
                    invoke = self.clock.now()
                    code, details = await call()
                    self.probes.append(Probe(node, name, invoke, self.clock.now(), code, details))
                    await asyncio.sleep(self.pause)

    def _calls(self, node: int, channel: grpc.aio.Channel, rng: random.Random) -> list[tuple[str, Call]]:
        kv = kv_pb2_grpc.KVStub(channel)
        replica = replica_pb2_grpc.ReplicaStub(channel)
        limits = self.limits
        long_key = key(limits.max_key_bytes + 1, f"{self.prefix}long")
        too_big = b"v" * (limits.max_value_bytes + 1)
        mixed = kv_pb2.BatchWriteRequest(
            mutations=[
                kv_pb2.Mutation(key=f"{self.prefix}batch/0".encode(), value=b"good"),
                kv_pb2.Mutation(key=long_key, value=b"v"),
                kv_pb2.Mutation(key=f"{self.prefix}batch/1".encode(), value=b"good"),
                kv_pb2.Mutation(key=self.too_big_key, value=too_big),
                kv_pb2.Mutation(key=f"{self.prefix}batch/2".encode(), delete=True),
            ]
        )
        over_budget = kv_pb2.BatchGetRequest(keys=[self.big_key] * BIG_KEY_REPEATS)
        near_max_clock = replica_pb2.ReadRequest(header=header(NEAR_MAX_CLOCK), keys=[self.big_key])
        raw = every_method(channel)
        garbage = iter(range(1 << 62))

        async def unparseable() -> tuple[grpc.StatusCode, str]:
            """Each method of every service in turn (the method is named in the details)."""
            n = next(garbage)
            name, method = raw[n % len(raw)]
            # Random bytes behind a field of wire type 7 (no such type) never parse; or GARBAGE's own.
            junk = b"\x0f" + rng.randbytes(rng.randrange(1, 300)) if n % 2 else GARBAGE[n % len(GARBAGE)]
            code, details = await _status(method(junk, timeout=CALL_TIMEOUT))
            return code, f"{name}: {details}"

        async def future_apply() -> tuple[grpc.StatusCode, str]:
            """An OK answer whose one item is refused counts as that item's refusal."""
            now = time.time_ns() // 1_000_000
            future = record(f"{self.prefix}future/{node}".encode(), b"future", from_ms(now + HOUR_MS))
            request = replica_pb2.ApplyRequest(
                header=header(from_ms(now)), items=[replica_pb2.ApplyItem(record=future)]
            )
            try:
                reply = await replica.Apply(request, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or ""
            (outcome,) = reply.outcomes
            if outcome.applied or not outcome.error_code:
                return grpc.StatusCode.OK, "the record from the future was applied"
            return _CODES[outcome.error_code], outcome.error

        def rpc(method: Callable[..., Awaitable[object]], request: object) -> Call:
            return lambda: _status(method(request, timeout=CALL_TIMEOUT))

        return [
            ("Put long key", rpc(kv.Put, kv_pb2.PutRequest(key=long_key, value=b"v"))),
            ("Get long key", rpc(kv.Get, kv_pb2.GetRequest(key=long_key))),
            ("Put value over limit", rpc(kv.Put, kv_pb2.PutRequest(key=self.too_big_key, value=too_big))),
            ("BatchWrite good and bad items", rpc(kv.BatchWrite, mixed)),
            (BATCH_GET, rpc(kv.BatchGet, over_budget)),
            ("unparseable bytes", unparseable),
            ("Replica.Read clock 2^64-2", rpc(replica.Read, near_max_clock)),
            ("Replica.Apply version 1 h ahead", future_apply),
        ]

    def counts(self) -> dict[str, dict[str, int]]:
        """Probe name -> status name -> how many, for the report."""
        tally: dict[str, Counter[str]] = {}
        for p in self.probes:
            tally.setdefault(p.name, Counter())[p.code.name] += 1
        return {name: dict(sorted(c.items())) for name, c in sorted(tally.items())}

    def unreached(self) -> list[Probe]:
        """Over-budget BatchGets that a live node answered UNAVAILABLE because too few replicas
        answered in time. The node learns a value's size from its replicas, so a read that cannot
        reach a quorum cannot be refused for its size: it fails as any read would, and changes
        nothing. Counted apart, and reported."""
        unavailable = grpc.StatusCode.UNAVAILABLE
        return [
            p
            for p in self.probes
            if p.name == BATCH_GET and p.code == unavailable and "replicas answered" in p.details
        ]

    def violations(self, faults: Sequence[FaultEvent], node_ids: Sequence[str]) -> list[Probe]:
        """Every probe that did not end in a definite refusal, except :meth:`unreached` reads, and
        UNAVAILABLE (or a deadline) from a node while a fault that took it away lasted, or within
        DOWN_SLACK_SECONDS of its end."""
        end_of_run = self.clock.now()
        unreached = {id(p) for p in self.unreached()}

        def down(p: Probe) -> bool:
            if p.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return False
            return any(
                f.target == node_ids[p.node]
                and f.kind in ("kill -9", "pause")
                and p.complete >= f.start
                and p.invoke <= (end_of_run if f.end is None else f.end) + DOWN_SLACK_SECONDS
                for f in faults
            )

        return [p for p in self.probes if p.code not in REFUSALS and id(p) not in unreached and not down(p)]


_CODES = {code.value[0]: code for code in grpc.StatusCode}

"""Single-key gets, puts and deletes riding shared BatchGet and BatchWrite RPCs.

One :class:`~kvnode.client.coalescer.Coalescer` per node, level and direction. A batch of one is
sent as the plain unary call, so a client with one call in flight sends exactly what it would
without coalescing. The node answers a batch all or nothing, so a batch it refuses is split
(see :meth:`Coalescing._shared`): each call is sent again alone and gets its own answer, and a bad
item, or a key whose replicas are down, fails its own caller only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from kvnode.api.v1 import kv_pb2, types_pb2
from kvnode.client import transport as rpc
from kvnode.client.coalescer import Coalescer, CoalesceStats, Outcome, Send
from kvnode.client.transport import Caller
from kvnode.core.errors import DeadlineExceeded, InvalidArgument, KVError, Unavailable

MAX_ITEMS = 1000
"""The node's default ``--max-batch-items``."""
MAX_BYTES = 4 * 1024 * 1024
"""The node's default ``--max-batch-bytes`` (keys plus values)."""
DEFAULT_WINDOW = 0.05
"""The longest a call is expected to wait gathering, in seconds: calls whose own deadline is
shorter are sent alone, so that waiting for a shared RPC cannot eat their whole budget."""

Targets = Callable[[], list[str]]
I = TypeVar("I")  # noqa: E741 - item
R = TypeVar("R")  # result


class Coalescing:
    """Hands each eligible call to its node's queue; keeps the client's :class:`CoalesceStats`."""

    def __init__(
        self,
        caller: Caller,
        *,
        window: float = DEFAULT_WINDOW,
        max_items: int = MAX_ITEMS,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.stats = CoalesceStats()
        self.window = window
        self._caller = caller
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._writes: dict[tuple[str, int], Coalescer[kv_pb2.Mutation, types_pb2.Version]] = {}
        self._reads: dict[tuple[str, int], Coalescer[bytes, types_pb2.KeyValue]] = {}
        self._targets: dict[tuple[str, int], list[str]] = {}

    def eligible(self, level: int, timeout: float) -> bool:
        """LINEARIZABLE works one key at a time on the node, and a short deadline cannot wait."""
        return level != types_pb2.CONSISTENCY_LINEARIZABLE and timeout >= self.window

    async def write(
        self, mutation: kv_pb2.Mutation, level: int, targets: list[str], timeout: float
    ) -> types_pb2.Version:
        queue = self._queue(self._writes, level, targets, self._write_sender, distinct_keys=True)
        size = len(mutation.key) + len(mutation.value)
        return await queue.call(mutation, key=mutation.key, size=size, timeout=timeout)

    async def read(self, key: bytes, level: int, targets: list[str], timeout: float) -> types_pb2.KeyValue:
        queue = self._queue(self._reads, level, targets, self._read_sender, distinct_keys=False)
        return await queue.call(key, key=key, size=len(key), timeout=timeout)

    def _queue(
        self,
        queues: dict[tuple[str, int], Coalescer[I, R]],
        level: int,
        targets: list[str],
        sender: Callable[[int, Targets], Send[I, R]],
        *,
        distinct_keys: bool,
    ) -> Coalescer[I, R]:
        """The queue of the call's first target at its level. Its RPCs fail over along the targets
        of the latest call that joined it."""
        where = (targets[0], level)
        self._targets[where] = targets
        queue = queues.get(where)
        if queue is None:
            queue = queues[where] = Coalescer(
                sender(level, lambda: self._targets[where]),
                max_items=self._max_items,
                max_bytes=self._max_bytes,
                stats=self.stats,
                distinct_keys=distinct_keys,
            )
        return queue

    async def _shared(
        self,
        items: list[I],
        seconds: float,
        batch: Callable[[list[I], float], Awaitable[Sequence[R]]],
        alone: Callable[[I, float], Awaitable[Outcome[R]]],
        *,
        write: bool,
    ) -> Sequence[Outcome[R]]:
        """One batch RPC for ``items``. A batch the node refused as a whole may have failed for
        some of its calls only, so each is sent again alone within what is left of the time:
        after InvalidArgument always (the node did nothing), after Unavailable (too few replicas
        of some keys, say) when the calls may be repeated: reads, and writes if the retry policy
        retries them."""
        if len(items) == 1:
            return [await alone(items[0], seconds)]
        deadline = time.monotonic() + seconds
        try:
            return await batch(items, seconds)
        except InvalidArgument:
            pass
        except Unavailable:
            if write and not self._caller.policy.retry_writes:
                raise
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"no answer within {seconds:.3g}s")
        return await asyncio.gather(*(alone(item, left) for item in items))

    def _write_sender(self, level: int, targets: Targets) -> Send[kv_pb2.Mutation, types_pb2.Version]:
        caller = self._caller

        async def alone(m: kv_pb2.Mutation, seconds: float) -> Outcome[types_pb2.Version]:
            try:
                if m.delete:
                    request = kv_pb2.DeleteRequest(key=m.key, consistency=level)  # type: ignore[arg-type]
                    return (await caller.call(rpc.DELETE, request, targets(), timeout=seconds)).version
                put = kv_pb2.PutRequest(key=m.key, value=m.value, consistency=level)  # type: ignore[arg-type]
                return (await caller.call(rpc.PUT, put, targets(), timeout=seconds)).version
            except KVError as exc:
                return exc

        async def batch(items: list[kv_pb2.Mutation], seconds: float) -> Sequence[types_pb2.Version]:
            request = kv_pb2.BatchWriteRequest(mutations=items, consistency=level)  # type: ignore[arg-type]
            return (await caller.call(rpc.BATCH_WRITE, request, targets(), timeout=seconds)).versions

        return lambda items, seconds: self._shared(items, seconds, batch, alone, write=True)

    def _read_sender(self, level: int, targets: Targets) -> Send[bytes, types_pb2.KeyValue]:
        caller = self._caller

        async def alone(key: bytes, seconds: float) -> Outcome[types_pb2.KeyValue]:
            request = kv_pb2.GetRequest(key=key, consistency=level)  # type: ignore[arg-type]
            try:
                return (await caller.call(rpc.GET, request, targets(), timeout=seconds)).kv
            except KVError as exc:
                return exc

        async def batch(keys: list[bytes], seconds: float) -> Sequence[types_pb2.KeyValue]:
            request = kv_pb2.BatchGetRequest(keys=keys, consistency=level)  # type: ignore[arg-type]
            return (await caller.call(rpc.BATCH_GET, request, targets(), timeout=seconds)).kvs

        return lambda keys, seconds: self._shared(keys, seconds, batch, alone, write=False)

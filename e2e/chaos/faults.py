"""Faults for local kvnode processes, recorded on the workload's clock.

Every fault is logged as a :class:`~e2e.chaos.history.FaultEvent` in the history, so the report can
shade it on the throughput plot. Process faults go through :class:`ProcessCluster` (SIGKILL,
SIGSTOP/SIGCONT, restart on the same data directory); the blocking calls run in a worker thread so
the workload's event loop keeps going. Partitions go through a :class:`Partitioner`: network
namespaces (:class:`NetnsPartitioner`) where the suite runs as root, else the TCP proxy mesh
(:class:`ProxyPartitioner`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from e2e.chaos.history import FaultEvent, History
from e2e.chaos.netns import NetnsLab
from e2e.chaos.proxy import ProxyMesh
from e2e.chaos.workload import Clock
from kvnode.testing.processes import ProcessCluster


class FaultLog:
    def __init__(self, history: History, clock: Clock) -> None:
        self.history = history
        self.clock = clock

    def begin(self, kind: str, target: str, detail: str = "") -> FaultEvent:
        event = FaultEvent(kind, target, self.clock.now(), None, detail)
        self.history.faults.append(event)
        return event

    def end(self, event: FaultEvent) -> None:
        event.end = self.clock.now()

    def instant(self, kind: str, target: str, detail: str = "") -> FaultEvent:
        event = self.begin(kind, target, detail)
        event.end = event.start
        return event

    @asynccontextmanager
    async def span(self, kind: str, target: str, detail: str = "") -> AsyncIterator[FaultEvent]:
        event = self.begin(kind, target, detail)
        try:
            yield event
        finally:
            self.end(event)


class Partitioner(Protocol):
    method: str

    def isolate(self, node: int) -> None: ...

    def heal(self) -> None: ...


class NetnsPartitioner:
    def __init__(self, lab: NetnsLab) -> None:
        self.lab = lab
        self.method = f"netns ({lab.method})"

    def isolate(self, node: int) -> None:
        self.lab.isolate(node)

    def heal(self) -> None:
        self.lab.heal()


class ProxyPartitioner:
    def __init__(self, mesh: ProxyMesh, ids: Sequence[str]) -> None:
        self.mesh = mesh
        self.ids = list(ids)
        self.method = "proxy"

    def isolate(self, node: int) -> None:
        self.mesh.isolate(self.ids[node], self.ids)

    def heal(self) -> None:
        self.mesh.heal()


class Faults:
    """Fault actions against one cluster, each logged in ``log``."""

    def __init__(
        self, cluster: ProcessCluster, log: FaultLog, partitioner: Partitioner | None = None
    ) -> None:
        self.cluster = cluster
        self.log = log
        self.partitioner = partitioner
        self._down: dict[int, FaultEvent] = {}
        self._paused: dict[int, FaultEvent] = {}
        self._partition: FaultEvent | None = None

    def _name(self, index: int) -> str:
        return self.cluster[index].node_id

    async def kill(self, *indexes: int) -> None:
        """SIGKILL: the nodes stay down until :meth:`restart`."""
        for i in indexes:
            self._down[i] = self.log.begin("kill -9", self._name(i))
        await asyncio.gather(*(asyncio.to_thread(self.cluster.kill, i) for i in indexes))

    async def restart(self, *indexes: int, timeout: float = 30.0) -> None:
        """Start killed nodes again on the same data directory and wait until they serve."""

        def start(i: int) -> None:
            self.cluster.start(i, wait=False)
            self.cluster.wait_serving(i, timeout=timeout)

        await asyncio.gather(*(asyncio.to_thread(start, i) for i in indexes))
        for i in indexes:
            if (event := self._down.pop(i, None)) is not None:
                self.log.end(event)

    async def crash(self, *indexes: int, after: float, down_for: float) -> None:
        """After ``after`` seconds, kill -9 the nodes; restart them ``down_for`` seconds later."""
        await self.wait(after)
        await self.kill(*indexes)
        await self.wait(down_for)
        await self.restart(*indexes)

    async def pause(self, index: int) -> None:
        """SIGSTOP: the process is frozen (a GC or VM stall) until :meth:`resume`."""
        self._paused[index] = self.log.begin("pause", self._name(index))
        await asyncio.to_thread(self.cluster.pause, index)

    async def resume(self, index: int) -> None:
        await asyncio.to_thread(self.cluster.resume, index)
        if (event := self._paused.pop(index, None)) is not None:
            self.log.end(event)

    async def isolate(self, index: int) -> None:
        if self.partitioner is None:
            raise RuntimeError("this cluster was built without a partitioner")
        self._partition = self.log.begin("partition", self._name(index), self.partitioner.method)
        await asyncio.to_thread(self.partitioner.isolate, index)

    async def heal(self) -> None:
        """End every fault still in force: heal partitions, resume paused nodes, restart dead ones."""
        if self.partitioner is not None:
            await asyncio.to_thread(self.partitioner.heal)
        if self._partition is not None:
            self.log.end(self._partition)
            self._partition = None
        for i in list(self._paused):
            await self.resume(i)
        if self._down:
            await self.restart(*self._down)

    async def wait(self, seconds: float) -> None:
        """Let the workload run for a while between faults."""
        await asyncio.sleep(seconds)

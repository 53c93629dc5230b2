"""Housekeeping a node does on a timer: collect tombstones past the grace period, and note that the
node is alive (a node that was away longer than the grace rebuilds instead of replaying old data)."""

from __future__ import annotations

from collections.abc import Callable

from kvnode.cluster.clock import HybridClock, physical_ms
from kvnode.metrics import NodeMetrics
from kvnode.storage.groupcommit import GroupCommitter
from kvnode.storage.ops import CollectTombstones, PutMeta
from kvnode.storage.schema import Meta

GC_BATCH = 1000
"""Tombstones removed per write transaction, so that collection never holds up client writes."""


class Maintenance:
    """One round of housekeeping per :meth:`run`; the node runs it on a timer."""

    def __init__(
        self,
        committer: GroupCommitter,
        clock: HybridClock,
        horizon: Callable[[], int],
        metrics: NodeMetrics,
    ) -> None:
        self._committer = committer
        self._clock = clock
        self._horizon = horizon
        self._metrics = metrics

    async def run(self) -> None:
        horizon = self._horizon()
        while True:
            collected = await self._committer.submit(CollectTombstones(horizon, GC_BATCH))
            self._metrics.tombstones_collected.inc(collected)
            if collected < GC_BATCH:
                break
        now_ms = physical_ms(self._clock.wall())
        await self._committer.submit(PutMeta.of(Meta.ALIVE_MS, now_ms))

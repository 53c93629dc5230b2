"""Hinted handoff: the writes a replica missed, kept durably and replayed when it is back.

A coordinator stores a hint for every replica whose Apply failed, in the same LMDB store as its data
(so hints survive a restart), and a background loop delivers them as repairs. Hints are bounded:
older than ``max_age`` they are dropped at replay time, and a replica's backlog never grows past
``max_bytes``. Anti-entropy repairs whatever a dropped hint would have carried.
"""

from __future__ import annotations

import asyncio
import logging

from kvnode.cluster.clock import HybridClock, physical_ms
from kvnode.cluster.roster import Roster
from kvnode.cluster.topology import Topology
from kvnode.core.records import Record, chunked
from kvnode.metrics import NodeMetrics
from kvnode.storage.engine import Storage
from kvnode.storage.groupcommit import GroupCommitter
from kvnode.storage.ops import AddHints, DeleteHints
from kvnode.storage.schema import Hint

log = logging.getLogger(__name__)

PAGE = 500


class HintedHandoff:
    """Keeps the writes each replica missed in this node's store and delivers them once the
    replica answers; tracks the backlog per replica for the bounds and the metrics."""

    def __init__(
        self,
        storage: Storage,
        committer: GroupCommitter,
        roster: Roster,
        topology: Topology,
        clock: HybridClock,
        metrics: NodeMetrics,
        *,
        max_age: float,
        max_bytes: int,
    ) -> None:
        self._storage = storage
        self._committer = committer
        self._roster = roster
        self._topology = topology
        self._clock = clock
        self._metrics = metrics
        self._max_age_ms = int(max_age * 1000)
        self._max_bytes = max_bytes
        self._totals: dict[str, list[int]] = {t: [n, b] for t, (n, b) in storage.hint_totals().items()}
        self._tasks: set[asyncio.Task[None]] = set()
        for target in self._totals:
            self._publish(target)

    def totals(self) -> dict[str, tuple[int, int]]:
        """Per target: (hints, bytes) pending."""
        return {t: (n, b) for t, (n, b) in self._totals.items() if n}

    def defer(self, target: str, records: list[Record]) -> None:
        """Keep ``records`` for ``target``, in the background; the request does not wait."""
        if self._topology.membership.member(target) is None:
            self._metrics.hints_dropped.labels(target, "not_member").inc(len(records))
            return
        if self._totals.get(target, [0, 0])[1] >= self._max_bytes:
            self._metrics.hints_dropped.labels(target, "full").inc(len(records))
            log.warning("hint backlog for %s is full; anti-entropy will repair it", target)
            return
        task = asyncio.get_running_loop().create_task(self._store(target, records))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _store(self, target: str, records: list[Record]) -> None:
        created = physical_ms(self._clock.wall())
        try:
            sizes = await self._committer.submit(AddHints.of(target, records, created))
        except Exception as exc:  # noqa: BLE001 - a hint lost to a full disk is repaired later
            self._metrics.hints_dropped.labels(target, "store_failed").inc(len(records))
            log.warning("could not store %d hints for %s: %s", len(records), target, exc)
            return
        self._account(target, len(sizes), sum(sizes))
        self._metrics.hints_stored.labels(target).inc(len(sizes))

    def _account(self, target: str, count: int, size: int) -> None:
        entry = self._totals.setdefault(target, [0, 0])
        entry[0] += count
        entry[1] += size
        self._publish(target)

    def _publish(self, target: str) -> None:
        count, size = self._totals[target]
        self._metrics.hints_pending.labels(target).set(count)
        self._metrics.hint_bytes.labels(target).set(size)

    async def replay_all(self) -> int:
        """Deliver every target's hints that can be delivered now; returns how many were."""
        delivered = 0
        for target in [t for t, (n, _) in self._totals.items() if n]:
            try:
                delivered += await self.replay(target)
            except Exception as exc:  # noqa: BLE001 - the target is down; try again next round
                log.debug("hint replay to %s paused: %s", target, exc)
        return delivered

    async def replay(self, target: str) -> int:
        delivered = 0
        while True:
            hints = self._storage.hints(target, PAGE)
            if not hints:
                return delivered
            keep = self._deliverable(target, hints)
            if keep:
                peer = self._roster.peer(target)
                if peer is None:
                    return delivered
                for chunk in chunked(h.record for h in keep if h.record is not None):
                    await peer.apply([(r, False) for r in chunk], repair=True)
                self._metrics.hints_replayed.labels(target).inc(len(keep))
                delivered += len(keep)
            freed = await self._committer.submit(DeleteHints([h.id for h in hints]))
            self._account(target, -sum(1 for f in freed if f), -sum(freed))

    def _deliverable(self, target: str, hints: list[Hint]) -> list[Hint]:
        """The hints still worth sending; the rest are counted as dropped."""
        if self._topology.membership.member(target) is None:
            self._metrics.hints_dropped.labels(target, "not_member").inc(len(hints))
            return []
        intact = [h for h in hints if h.record is not None]
        if len(intact) < len(hints):  # failed their check: never spread a corrupt record
            self._metrics.hints_dropped.labels(target, "corrupt").inc(len(hints) - len(intact))
        now = physical_ms(self._clock.wall())
        keep = [h for h in intact if now - h.created_ms <= self._max_age_ms]
        if len(keep) < len(intact):
            self._metrics.hints_dropped.labels(target, "expired").inc(len(intact) - len(keep))
        return keep

    async def close(self, timeout: float = 5.0) -> None:
        """Let hints being stored finish, for at most ``timeout`` seconds (a stuck disk must not
        hold up shutdown; anti-entropy repairs what a lost hint would have)."""
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

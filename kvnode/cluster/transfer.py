"""Moving partitions between members: joins, decommissions and rebuilds.

All three copy a partition the same way: read it from enough of its current replicas that every
acknowledged write is among them (``RF - W + 1``, so every write quorum overlaps), keep the newest
version of each key, and write the result to the new holder with the original versions.

- *Join*: a JOINING member pulls the partitions it gains into its own store.
- *Decommission*: a LEAVING member pushes the partitions it loses to their new owners, then reads
  each owner's (key, version) list back and checks that it holds every record, at least as new.
- *Rebuild*: a member whose data directory was empty pulls every partition it holds, and refuses to
  answer reads until it is done.

Writes keep flowing meanwhile: during a transition they reach a quorum of the old and of the new
replica sets, and reads use the old set until the operator ends the transition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from kvnode.api.v1 import admin_pb2
from kvnode.cluster.antientropy import all_key_versions
from kvnode.cluster.replica import Replica
from kvnode.cluster.roster import Roster
from kvnode.cluster.topology import Topology
from kvnode.core.errors import FailedPrecondition, Unavailable
from kvnode.core.levels import quorum
from kvnode.core.membership import MemberState
from kvnode.core.records import Record, chunked
from kvnode.metrics import NodeMetrics

log = logging.getLogger(__name__)

PAGE = 1000
REBUILD_RETRY = 1.0


class TransferError(Exception):
    """A transfer could not finish; the message says which partition and why."""


@dataclass(frozen=True)
class TransferStatus:
    kind: str = ""
    state: int = admin_pb2.TRANSFER_STATE_IDLE
    epoch: int = 0
    partitions_total: int = 0
    partitions_done: int = 0
    records_copied: int = 0
    error: str = ""

    def to_proto(self) -> admin_pb2.TransferStatus:
        return admin_pb2.TransferStatus(
            state=self.state,  # type: ignore[arg-type]
            kind=self.kind,
            epoch=self.epoch,
            partitions_total=self.partitions_total,
            partitions_done=self.partitions_done,
            records_copied=self.records_copied,
            error=self.error,
        )


def sources_needed(replicas: int) -> int:
    """How many of a partition's replicas must be read to see every acknowledged write."""
    return replicas - quorum(replicas) + 1


async def read_partition(replica: Replica, partition: int) -> list[Record]:
    records: list[Record] = []
    after = b""
    while True:
        page, exhausted = await replica.fetch_partition(partition, after, PAGE)
        records.extend(page)
        if exhausted or not page:
            return records
        after = page[-1].key


class TransferManager:
    """Runs this node's one transfer at a time (join, decommission or rebuild) in the background,
    and reports its progress as a :class:`TransferStatus` (Admin.Join, Admin.Decommission and
    Admin.Status show it)."""

    def __init__(
        self,
        node_id: str,
        roster: Roster,
        topology: Topology,
        metrics: NodeMetrics,
        horizon: Callable[[], int],
    ) -> None:
        self._node_id = node_id
        self._roster = roster
        self._topology = topology
        self._metrics = metrics
        self._horizon = horizon
        self.status = TransferStatus()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, kind: str) -> TransferStatus:
        """Start a join or decommission for the current epoch, or report the one under way (whose
        ``kind`` tells a caller waiting for another kind to ask again once it is done)."""
        membership = self._topology.membership
        if self.running or (
            self.status.kind == kind
            and self.status.epoch == membership.epoch
            and self.status.state == admin_pb2.TRANSFER_STATE_DONE
        ):
            return self.status
        wanted = MemberState.JOINING if kind == "join" else MemberState.LEAVING
        member = membership.member(self._node_id)
        if member is None or member.state != wanted:
            state = "not a member" if member is None else member.state.name
            raise FailedPrecondition(
                f"cannot {kind}: node {self._node_id} is {state} in membership epoch {membership.epoch}; "
                f"it must be {wanted.name} first (Admin.SetMembership)"
            )
        placement = self._topology.placement
        partitions = placement.gained(self._node_id) if kind == "join" else placement.lost(self._node_id)
        self._launch(kind, partitions, push=kind == "decommission")
        return self.status

    def start_rebuild(self) -> None:
        """Copy every partition this node holds from its peers, retrying until it succeeds."""
        partitions = self._topology.placement.held(self._node_id)
        self._launch("rebuild", partitions, push=False, retry=True)

    def _launch(self, kind: str, partitions: list[int], *, push: bool, retry: bool = False) -> None:
        epoch = self._topology.epoch
        self.status = TransferStatus(
            kind, admin_pb2.TRANSFER_STATE_RUNNING, epoch, partitions_total=len(partitions)
        )
        self._task = asyncio.get_running_loop().create_task(self._run(kind, partitions, push, retry))

    async def wait(self) -> TransferStatus:
        if self._task is not None:
            await asyncio.shield(self._task)
        return self.status

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, kind: str, partitions: list[int], push: bool, retry: bool) -> None:
        log.info("%s started: %d partitions", kind, len(partitions))
        pending = list(partitions)
        while True:
            try:
                while pending:
                    copied = await (self._push(pending[0]) if push else self._pull(pending[0]))
                    pending.pop(0)
                    self._metrics.transfer_records.labels(kind).inc(copied)
                    self.status = replace(
                        self.status,
                        partitions_done=self.status.partitions_done + 1,
                        records_copied=self.status.records_copied + copied,
                    )
                self.status = replace(self.status, state=admin_pb2.TRANSFER_STATE_DONE)
                log.info("%s done: %d records copied", kind, self.status.records_copied)
                return
            except (TransferError, Unavailable) as exc:
                if not retry:
                    self.status = replace(self.status, state=admin_pb2.TRANSFER_STATE_FAILED, error=str(exc))
                    log.warning("%s failed: %s", kind, exc)
                    return
                log.info("%s waiting for peers: %s", kind, exc)
                await asyncio.sleep(REBUILD_RETRY)

    async def _gather(self, partition: int, sources: list[str], need: int) -> list[Record]:
        """The newest version of every key, read from at least ``need`` of ``sources``."""
        results = await asyncio.gather(
            *(read_partition(self._roster.get(s), partition) for s in sources), return_exceptions=True
        )
        answered = [r for r in results if not isinstance(r, BaseException)]
        if len(answered) < need:
            errors = "; ".join(str(r) for r in results if isinstance(r, BaseException))
            raise TransferError(
                f"partition {partition}: {len(answered)} of {len(sources)} replicas answered, "
                f"{need} needed ({errors})"
            )
        merged: dict[bytes, Record] = {}
        for records in answered:
            for rec in records:
                seen = merged.get(rec.key)
                if seen is None or rec.version > seen.version:
                    merged[rec.key] = rec
        horizon = self._horizon()  # tombstones past it are being collected; don't spread them
        return [r for r in merged.values() if not (r.tombstone and r.version.hlc < horizon)]

    async def _write(self, target: str, records: list[Record]) -> None:
        replica = self._roster.get(target)
        for chunk in chunked(records):
            await replica.apply([(r, False) for r in chunk], repair=True)

    async def _pull(self, partition: int) -> int:
        old = self._topology.placement.read_replicas(partition)
        sources = [r for r in old if r != self._node_id]
        if not sources:
            return 0
        records = await self._gather(partition, sources, min(sources_needed(len(old)), len(sources)))
        await self._write(self._node_id, records)
        return len(records)

    async def _push(self, partition: int) -> int:
        old, new = self._topology.placement.write_sets(partition)
        gainers = [n for n in new if n not in old]
        records = await self._gather(partition, list(old), sources_needed(len(old)))
        for target in gainers:
            await self._write(target, records)
            held = await all_key_versions(self._roster.get(target), partition)
            for rec in records:
                have = held.get(rec.key)
                if have is None or have[0] < rec.version:
                    raise TransferError(
                        f"verification failed: {target} lacks key {rec.key!r} of partition {partition} "
                        f"at version {tuple(rec.version)}"
                    )
        return len(records) * len(gainers)

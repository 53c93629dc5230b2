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

A partition streams through in pages, whatever its size (:class:`PartitionMerge`): each source's
pages are merged as sorted streams, each merged batch is written to the new holder as soon as it is
complete and, for a decommission, checked against the holder's (key, version) pages walked
alongside (:class:`CopyTarget`). The transfer holds at most about two pages per source at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from bisect import bisect_right
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import groupby
from operator import attrgetter

from kvnode.api.v1 import admin_pb2
from kvnode.cluster.replica import KeyVersionEntry, Replica
from kvnode.cluster.roster import Roster
from kvnode.cluster.topology import Topology
from kvnode.core.errors import FailedPrecondition, Unavailable
from kvnode.core.levels import quorum
from kvnode.core.membership import MemberState
from kvnode.core.records import Record, chunked
from kvnode.metrics import NodeMetrics

log = logging.getLogger(__name__)

PAGE = 1000
"""Records asked for in one page, of a source or of a holder's key versions. With the byte budget
of one message (which the replica keeps to), it is what bounds a transfer's memory."""
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


_key = attrgetter("key")
_version = attrgetter("version")


def newest_per_key(records: Iterable[Record]) -> Iterator[Record]:
    """The newest version of each key of a key-ordered stream of records.

    Equal versions are one write (a version names its writer and that writer's clock tick), so
    which of two equal copies wins does not matter; ``max`` keeps the first.
    """
    for _, versions in groupby(records, key=_key):
        yield max(versions, key=_version)


class SourcePages:
    """One source replica's records of a partition, fetched a page at a time in key order."""

    def __init__(self, replica: Replica, partition: int, page: int) -> None:
        self._replica = replica
        self._partition = partition
        self._page = page
        self._after = b""
        self.buffered: list[Record] = []
        self.exhausted = False

    @property
    def needs_page(self) -> bool:
        return not self.buffered and not self.exhausted

    async def fetch(self) -> None:
        """Buffer the page after the last one (called when the buffer is empty)."""
        page, exhausted = await self._replica.fetch_partition(self._partition, self._after, self._page)
        self.buffered = page
        self.exhausted = exhausted or not page  # an empty page ends the stream, as it always has
        if page:
            self._after = page[-1].key

    def take_through(self, bound: bytes | None) -> list[Record]:
        """Remove and return the buffered records with keys up to ``bound`` (all when None)."""
        cut = len(self.buffered) if bound is None else bisect_right(self.buffered, bound, key=_key)
        taken, self.buffered = self.buffered[:cut], self.buffered[cut:]
        return taken


class PartitionMerge:
    """The newest version of every key of one partition, merged page by page from its sources.

    Each source's pages come in key order: the storage engine walks its partition index, and peers
    answer ``Replica.FetchPartition`` from the same walk. So once every source that is not
    exhausted has a page buffered, no version of a key at or below the smallest of their last
    buffered keys (the *bound*) can arrive later: all of them are in the buffers. Those records
    are merged and handed out as one batch, in key order, and only the sources whose buffers ran
    dry fetch their next page. Each source buffers at most one page, and the batch handed out
    holds at most one page's worth per source.

    A source whose fetch fails is dropped; the partition fails as soon as fewer than ``need``
    sources are left, which is when a copy could miss an acknowledged write. Batches handed out
    before a source failed came from a superset of the sources left, so they are as new.
    """

    def __init__(self, partition: int, sources: list[Replica], need: int, page: int, horizon: int) -> None:
        self._partition = partition
        self._streams = [SourcePages(replica, partition, page) for replica in sources]
        self._asked = len(sources)
        self._need = need
        self._horizon = horizon
        self._errors: list[str] = []

    async def batches(self) -> AsyncIterator[list[Record]]:
        """Non-empty key-ordered batches of the partition's newest records, each key once."""
        await self._fetch(self._streams)
        while any(s.buffered for s in self._streams):
            batch = self._newest_through(self._bound())
            if batch:
                yield batch
            await self._fetch([s for s in self._streams if s.needs_page])

    def _bound(self) -> bytes | None:
        """The last key whose every version is buffered; None when every source is exhausted."""
        return min((s.buffered[-1].key for s in self._streams if not s.exhausted), default=None)

    def _newest_through(self, bound: bytes | None) -> list[Record]:
        # heapq.merge keeps the sources' key order; the newest version is chosen before tombstones
        # past the horizon are dropped, so a collected delete never uncovers an older value.
        merged = heapq.merge(*(s.take_through(bound) for s in self._streams), key=_key)
        return [r for r in newest_per_key(merged) if not (r.tombstone and r.version.hlc < self._horizon)]

    async def _fetch(self, streams: list[SourcePages]) -> None:
        """Fetch the next page of each of ``streams``; drop those that fail."""
        results = await asyncio.gather(*(s.fetch() for s in streams), return_exceptions=True)
        failed = [(s, r) for s, r in zip(streams, results, strict=True) if isinstance(r, BaseException)]
        self._errors += [str(error) for _, error in failed]
        self._streams = [s for s in self._streams if all(s is not f for f, _ in failed)]
        if len(self._streams) < self._need:
            raise TransferError(
                f"partition {self._partition}: {len(self._streams)} of {self._asked} replicas answered, "
                f"{self._need} needed ({'; '.join(self._errors)})"
            )


class CopyTarget:
    """A new holder of a partition: takes the merged batches, and can check that it kept them.

    The check is a merge-join of a batch with the holder's (key, version) pages, fetched after the
    batch was written. It starts just past the previous batch's last key; what a page shows beyond
    the batch is read again for the next batch, once that batch is written.
    """

    def __init__(self, target: str, replica: Replica, partition: int, page: int) -> None:
        self.target = target
        self._replica = replica
        self._partition = partition
        self._page = page
        self._checked = b""

    async def write(self, batch: list[Record]) -> None:
        for chunk in chunked(batch):
            await self._replica.apply([(r, False) for r in chunk], repair=True)

    async def verify(self, batch: list[Record]) -> None:
        """Raise naming the first record of ``batch`` that the holder lacks or holds only older."""
        wanted = iter(batch)
        want = next(wanted)
        async with contextlib.aclosing(self._held_after(self._checked)) as held:
            async for key, version, _ in held:
                if key < want.key:
                    continue  # a key the sources did not have: the holder may keep newer writes
                if key > want.key or version < want.version:
                    break
                if (following := next(wanted, None)) is None:
                    self._checked = want.key
                    return
                want = following
        raise TransferError(
            f"verification failed: {self.target} lacks key {want.key!r} of partition {self._partition} "
            f"at version {tuple(want.version)}"
        )

    async def _held_after(self, after: bytes) -> AsyncGenerator[KeyVersionEntry, None]:
        while True:
            page, exhausted = await self._replica.key_versions(self._partition, after, self._page)
            for entry in page:
                yield entry
            if exhausted or not page:
                return
            after = page[-1][0]


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
        *,
        page: int = PAGE,
    ) -> None:
        self._node_id = node_id
        self._page = page
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

    async def _copy(
        self, partition: int, sources: list[str], need: int, targets: list[str], *, verify: bool
    ) -> int:
        """Stream the newest records of ``partition``, read from at least ``need`` of ``sources``,
        to each of ``targets``; returns the records written, counted once per target."""
        horizon = self._horizon()  # tombstones past it are being collected; don't spread them
        merge = PartitionMerge(partition, [self._roster.get(s) for s in sources], need, self._page, horizon)
        holders = [CopyTarget(t, self._roster.get(t), partition, self._page) for t in targets]
        copied = 0
        async for batch in merge.batches():
            for holder in holders:
                await holder.write(batch)
                if verify:
                    await holder.verify(batch)
            copied += len(batch) * len(holders)
        return copied

    async def _pull(self, partition: int) -> int:
        old = self._topology.placement.read_replicas(partition)
        sources = [r for r in old if r != self._node_id]
        if not sources:
            return 0
        need = min(sources_needed(len(old)), len(sources))
        return await self._copy(partition, sources, need, [self._node_id], verify=False)

    async def _push(self, partition: int) -> int:
        old, new = self._topology.placement.write_sets(partition)
        gainers = [n for n in new if n not in old]
        return await self._copy(partition, list(old), sources_needed(len(old)), gainers, verify=True)

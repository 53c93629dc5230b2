"""Finding records that fail their check, and repairing them from the other replicas.

Every read checks the records it meets (:mod:`kvnode.storage.schema`), but a record nobody reads
could rot unseen, and so could its replicas, until the last intact copy is gone. So a node also
**scrubs**: every ``--scrub-interval`` it reads every record of every partition, one partition per
read transaction, and

- repairs each record that fails its check (or that the partition index names but the data lacks)
  with the newest intact copy its other replicas hold; on a node with no other replica it can only
  report it (log and ``kvnode_scrub_unrepaired_records``): the record is never served (alone, a read
  of it answers DATA_LOSS);
- gives a checksum to each record written before checksums existed;
- recomputes the partition's stored digest from its intact records when they disagree. A corrupt
  record still counts in the digest it was written with, which would hide it from anti-entropy
  forever; once recomputed, the partition's digest differs from its replicas', and the scrub then
  compares the members' digests for those partitions the way anti-entropy does (etcd compares its
  members' hashes likewise) and copies what differs.

Reads that meet a corrupt record outside the read path (scans, partition pages for transfers and
anti-entropy) leave it out and report it here; its key is repaired at once in the background rather
than at the next pass. Reads through the coordinator repair what they meet themselves.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from kvnode.cluster.antientropy import READ_PAGE, AntiEntropy
from kvnode.cluster.local import LocalReplica
from kvnode.cluster.roster import Roster
from kvnode.cluster.topology import Topology
from kvnode.core.errors import KVError
from kvnode.core.logs import RateLimitedLog
from kvnode.core.records import Record, chunked, newest
from kvnode.metrics import NodeMetrics
from kvnode.storage.engine import Storage
from kvnode.storage.groupcommit import GroupCommitter
from kvnode.storage.ops import Scrubbed
from kvnode.storage.schema import Corrupt

log = logging.getLogger(__name__)
reports = RateLimitedLog(log)

REPAIR_NOW = frozenset({"scan", "fetch", "key_versions", "backup"})
"""Where a corrupt record found is repaired at once. A coordinator's read repairs what it meets, a
scrub pass what it finds, and a corrupt hint is dropped (anti-entropy covers it)."""
UPGRADE_BATCH = 1000
"""Records given a checksum per write transaction, so that an old store's upgrade never holds up
client writes for long."""


@dataclass
class ScrubStats:
    records: int = 0
    corrupt: int = 0
    repaired: int = 0
    checksums_added: int = 0
    digests_fixed: int = 0


class Scrubber:
    """The node's scrub passes, and its repairs of corrupt records that reads report."""

    def __init__(
        self,
        node_id: str,
        storage: Storage,
        committer: GroupCommitter,
        roster: Roster,
        topology: Topology,
        anti_entropy: AntiEntropy,
        metrics: NodeMetrics,
    ) -> None:
        self._node_id = node_id
        self._storage = storage
        self._committer = committer
        self._roster = roster
        self._topology = topology
        self._anti_entropy = anti_entropy
        self._metrics = metrics
        self._pending: set[bytes] = set()
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    @property
    def _local(self) -> LocalReplica:
        return self._roster.local

    # -- what reads report ---------------------------------------------------------------------

    def found(self, corrupt: Corrupt, where: str) -> None:
        """A read met a record that failed its check (the storage's corruption sink; any thread:
        scrubs and backups read in worker threads)."""
        self._metrics.corrupt_records.labels(where).inc()
        reports.log(
            f"found:{where}",
            logging.WARNING,
            "a record failed its checksum and was not served (%s): key %r: %s",
            where,
            corrupt.key[:64],
            corrupt.reason,
        )
        if where in REPAIR_NOW:
            self._loop.call_soon_threadsafe(self._queue, corrupt.key)

    def _queue(self, key: bytes) -> None:
        self._pending.add(key)
        self._wake.set()

    async def run_repairs(self) -> None:
        """Repair the keys reads reported, as they come (the node runs this for its life)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            keys, self._pending = sorted(self._pending), set()
            try:
                await self.repair(keys)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("repairing %d corrupt records failed; the next scrub pass retries", len(keys))

    # -- scrub passes --------------------------------------------------------------------------

    async def run_pass(self) -> ScrubStats:
        """Check every record of every partition; repair, upgrade and recount as needed."""
        stats = ScrubStats()
        if self._local.rebuilding:  # its data is incomplete until the rebuild is done
            return stats
        damaged: list[int] = []
        unrepaired = 0
        for partition in range(self._storage.partitions):
            check = await asyncio.to_thread(self._storage.check_partition, partition)
            stats.records += check.checked
            self._metrics.scrub_records.inc(check.checked)
            for start in range(0, max(len(check.unchecked), 1), UPGRADE_BATCH):
                batch = check.unchecked[start : start + UPGRADE_BATCH]
                recount = not check.digest_ok and start == 0
                if batch or recount:
                    stats.checksums_added += await self._committer.submit(Scrubbed(partition, batch, recount))
            if not check.digest_ok:
                stats.digests_fixed += 1
                self._metrics.scrub_digests_fixed.inc()
                damaged.append(partition)
            if check.corrupt:
                stats.corrupt += len(check.corrupt)
                repaired = await self.repair(check.corrupt)
                stats.repaired += repaired
                unrepaired += len(check.corrupt) - repaired
        self._metrics.scrub_checksums_added.inc(stats.checksums_added)
        if damaged:  # compare the members' digests of what was damaged, as anti-entropy does
            await self._anti_entropy.compare(damaged)
        self._metrics.scrub_unrepaired.set(unrepaired)
        self._metrics.scrub_passes.inc()
        if unrepaired:
            log.error(
                "scrub: %d records fail their checksum and no other replica answered with an intact "
                "copy; they are never served: bring the replicas back, or restore them from a backup",
                unrepaired,
            )
        log.info(
            "scrub pass done: %d records checked, %d corrupt, %d repaired, %d given a checksum, "
            "%d partition digests recomputed",
            stats.records,
            stats.corrupt,
            stats.repaired,
            stats.checksums_added,
            stats.digests_fixed,
        )
        return stats

    async def repair(self, keys: list[bytes]) -> int:
        """Replace this node's copies of ``keys`` with the newest intact copy its other replicas
        hold; returns how many were replaced."""
        placement = self._topology.placement
        by_replicas: dict[tuple[str, ...], list[bytes]] = {}
        for key in keys:
            old, new = placement.write_sets(placement.partition(key))
            others = tuple(r for r in dict.fromkeys(old + new) if r != self._node_id)
            by_replicas.setdefault(others, []).append(key)
        intact: list[Record] = []
        for others, group in by_replicas.items():
            for start in range(0, len(group), READ_PAGE):
                intact.extend(await self._newest(others, group[start : start + READ_PAGE]))
        repaired = 0
        for chunk in chunked(intact):
            results = await self._local.apply([(r, False) for r in chunk], repair=True)
            repaired += sum(1 for result in results if not isinstance(result, KVError))
        self._metrics.corrupt_repairs.labels("scrub").inc(repaired)
        if repaired:
            log.warning("repaired %d corrupt records from their other replicas", repaired)
        return repaired

    async def _newest(self, replicas: tuple[str, ...], keys: list[bytes]) -> list[Record]:
        """The newest intact copy of each key that any of ``replicas`` holds."""
        answers = await asyncio.gather(
            *(self._roster.get(r).read(keys) for r in replicas), return_exceptions=True
        )
        out: list[Record] = []
        for n, key in enumerate(keys):
            copies = [a[n] for a in answers if not isinstance(a, BaseException)]
            best = newest([c for c in copies if isinstance(c, Record)])
            if best is not None:
                out.append(best)
            elif copies and all(c is None for c in copies):
                reports.log(
                    "no copy",
                    logging.WARNING,
                    "key %r failed its checksum here and no other replica holds it",
                    key[:64],
                )
        return out

"""Restores on real snapshots: every record of every snapshot is replayed and the distinct live
keys are counted exactly as when a restore kept every key in memory, while it holds one chunk and
a record or two per snapshot, however large the backup."""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kvnode.backup import service, snapshots
from kvnode.backup.service import BackupService
from kvnode.backup.snapshots import Manifest
from kvnode.cluster.topology import Topology
from kvnode.core.levels import Level
from kvnode.core.membership import Membership
from kvnode.core.records import Record
from kvnode.metrics import NodeMetrics
from kvnode.storage.ops import ApplyRecords
from tests.cluster.harness import membership, open_store, record
from tests.cluster.histories import newest_copies, replica_copies

NODES = ["n1", "n2", "n3"]
BACKUP = "b1"


@dataclass
class ReadCounter:
    """Records read from snapshots for the replay (not for the verification before it)."""

    replaying: bool = False
    read: int = 0

    def watch(self, monkeypatch: pytest.MonkeyPatch, backup: BackupService) -> None:
        verify, records = backup.verify, snapshots.snapshot_records

        async def verified(
            directory: str, backup_id: str, node_id: str = ""
        ) -> tuple[list[Manifest], list[str]]:
            outcome = await verify(directory, backup_id, node_id)
            self.replaying = True
            if tracemalloc.is_tracing():
                tracemalloc.reset_peak()  # the verification reads in 1 MiB blocks; measure the replay
            return outcome

        def counted(folder: Path) -> Generator[Record, None, None]:
            for rec in records(folder):
                self.read += self.replaying
                yield rec

        monkeypatch.setattr(backup, "verify", verified)
        monkeypatch.setattr(snapshots, "snapshot_records", counted)


@dataclass
class ReplayCounter:
    """The coordinator's side of a restore: counts what it is given, and keeps it if asked to.
    With ``reads``, it also counts the most records read and not yet replayed (reads only grow
    between two chunks, so the most is reached just before one)."""

    keep: bool = True
    reads: ReadCounter | None = None
    kept: list[Record] = field(default_factory=list)
    largest_chunk: int = 0
    replayed: int = 0
    most_held: int = 0

    async def replicate_records(self, records: list[Record], level: Level) -> None:
        assert level is Level.QUORUM
        if self.reads is not None:
            self.most_held = max(self.most_held, self.reads.read - self.replayed)
        self.replayed += len(records)
        self.largest_chunk = max(self.largest_chunk, len(records))
        if self.keep:
            self.kept.extend(records)


async def take_backup(folder: Path, copies: dict[str, list[Record]]) -> Path:
    """A backup of one store per node, each holding that node's copies; returns its directory."""
    backups = folder / "backups"
    for node_id, records in copies.items():
        async with open_store(folder / node_id) as (storage, committer):
            await committer.submit(ApplyRecords.of((r, False) for r in records))
            snapshots.take_snapshot(
                storage, str(backups), BACKUP, node_id=node_id, epoch=1, replication_factor=3
            )
    return backups


@contextlib.asynccontextmanager
async def restoring(folder: Path, writer: ReplayCounter) -> AsyncIterator[BackupService]:
    """A node's backup service, writing what it restores to ``writer``."""
    members = membership(["r1"])

    async def persist(_: Membership) -> None:
        pass

    async with open_store(folder / "r1") as (storage, committer):
        yield BackupService(
            "r1", storage, committer, Topology("r1", members, persist), writer, NodeMetrics("r1", "test")
        )


def live_keys(copies: dict[str, list[Record]]) -> int:
    return sum(not r.tombstone for r in newest_copies(copies).values())


async def test_a_restore_replays_every_record_and_counts_the_keys_whose_newest_version_lives(
    tmp_path: Path,
) -> None:
    keys = [b"key-%05d" % i for i in range(3000)]
    copies = replica_copies(keys, NODES, first_hlc=1000, seed=7)  # ties, tombstones, missing keys
    backups = await take_backup(tmp_path, copies)
    writer = ReplayCounter()

    async with restoring(tmp_path, writer) as backup:
        replayed, live = await backup.restore(str(backups), BACKUP, Level.QUORUM)

    everything = sorted(r for records in copies.values() for r in records)
    assert (replayed, live) == (len(everything), live_keys(copies))
    assert sorted(writer.kept) == everything  # duplicates between snapshots included
    assert writer.largest_chunk == service.RESTORE_CHUNK


async def test_a_restore_of_a_backup_with_an_empty_snapshot(tmp_path: Path) -> None:
    copies = {"n1": [record("a", hlc=2), record("b", hlc=3, tomb=True)], "n2": [], "n3": [record("b", hlc=1)]}
    backups = await take_backup(tmp_path, copies)
    writer = ReplayCounter()

    async with restoring(tmp_path, writer) as backup:
        assert await backup.restore(str(backups), BACKUP, Level.QUORUM) == (3, 1)


async def test_a_restore_holds_a_chunk_and_a_few_records_whatever_the_backup_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted: records that left their snapshot and have not reached the coordinator. Measured:
    the bytes the replay allocates at most (a chunk of these records is about 0.2 MB), while the
    three snapshots hold 60,000 records; keeping every key in memory, as restores once did, peaked
    at 3.5 MB here."""
    keys = [b"a-key-of-forty-bytes-%019d" % i for i in range(20_000)]
    same = [record(k, b"v" * 100, hlc=5) for k in keys]
    backups = await take_backup(tmp_path, {n: same for n in NODES})
    reads = ReadCounter()
    writer = ReplayCounter(keep=False, reads=reads)

    async with restoring(tmp_path, writer) as backup:
        reads.watch(monkeypatch, backup)
        tracemalloc.start()
        try:
            assert await backup.restore(str(backups), BACKUP, Level.QUORUM) == (3 * len(keys), len(keys))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    print(f"restore: at most {writer.most_held} records held, peak {peak} bytes, of {writer.replayed}")
    # a chunk; the next record, which closed it; the rest of its key's versions; one per snapshot
    assert writer.most_held <= service.RESTORE_CHUNK + 2 * len(NODES)
    assert peak < 1 << 20

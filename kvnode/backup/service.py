"""What a node does for the Admin service's backup calls: take a snapshot, check one, list and
delete them, and restore one into the cluster.

Restore replays every snapshot's records through the cluster's ordinary write path with their
original versions. Replicas keep the newest version, so the duplicates between snapshots cost only
time, and a backup restores into a cluster of any size.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol

from kvnode.backup import snapshots
from kvnode.backup.snapshots import Manifest
from kvnode.cluster.topology import Topology
from kvnode.core.errors import FailedPrecondition
from kvnode.core.levels import Level, single_key_only
from kvnode.core.names import new_backup_id
from kvnode.core.records import Record
from kvnode.metrics import NodeMetrics
from kvnode.storage.engine import Storage
from kvnode.storage.groupcommit import GroupCommitter
from kvnode.storage.ops import PutMeta
from kvnode.storage.schema import Meta

RESTORE_CHUNK = 500


class RecordWriter(Protocol):
    """Writes records with the versions they carry, at a level (the coordinator)."""

    async def replicate_records(self, records: list[Record], level: Level) -> None: ...


class BackupService:
    """A node's backups: its own snapshots, and restores through the cluster's write path."""

    def __init__(
        self,
        node_id: str,
        storage: Storage,
        committer: GroupCommitter,
        topology: Topology,
        writer: RecordWriter,
        metrics: NodeMetrics,
    ) -> None:
        self._node_id = node_id
        self._storage = storage
        self._committer = committer
        self._topology = topology
        self._writer = writer
        self._metrics = metrics
        self.last_backup_unix = storage.get_meta(Meta.LAST_BACKUP) or 0
        metrics.last_backup.set(self.last_backup_unix)

    async def take(self, directory: str, backup_id: str) -> Manifest:
        """This node's snapshot and manifest under ``directory/backup_id/<node>`` (a new id when
        none is given); taking one that exists returns its manifest."""
        membership = self._topology.membership
        try:
            manifest = await asyncio.to_thread(
                snapshots.take_snapshot,
                self._storage,
                directory,
                backup_id or new_backup_id(),
                node_id=self._node_id,
                epoch=membership.epoch,
                replication_factor=membership.replication_factor,
            )
        except OSError as exc:
            self._metrics.backups.labels("failed").inc()
            raise FailedPrecondition(f"cannot write backup to {directory}: {exc.strerror or exc}") from None
        self.last_backup_unix = manifest.created_unix
        self._metrics.last_backup.set(manifest.created_unix)
        self._metrics.backups.labels("ok").inc()
        await self._committer.submit(PutMeta.of(Meta.LAST_BACKUP, manifest.created_unix))
        return manifest

    async def verify(
        self, directory: str, backup_id: str, node_id: str = ""
    ) -> tuple[list[Manifest], list[str]]:
        """The backup's manifests and the problems found (none when it is good)."""
        return await asyncio.to_thread(snapshots.verify, directory, backup_id, node_id)

    async def list(self, directory: str) -> list[list[Manifest]]:
        return await asyncio.to_thread(snapshots.list_backups, directory)

    async def delete(self, directory: str, backup_id: str) -> bool:
        return await asyncio.to_thread(snapshots.delete_backup, directory, backup_id)

    async def restore(self, directory: str, backup_id: str, level: Level) -> tuple[int, int]:
        """Replay a verified backup through the write path. Returns (records replayed, distinct
        live keys)."""
        single_key_only(level, "restore writes")
        manifests, problems = await self.verify(directory, backup_id)
        if problems:
            raise FailedPrecondition(f"backup {backup_id} failed verification: {'; '.join(problems)}")
        replayed = 0
        newest: dict[bytes, tuple[int, str, bool]] = {}
        for manifest in manifests:
            chunk: list[Record] = []
            for rec in snapshots.snapshot_records(Path(manifest.path)):
                chunk.append(rec)
                seen = newest.get(rec.key)
                if seen is None or (rec.version.hlc, rec.version.node_id) > seen[:2]:
                    newest[rec.key] = (rec.version.hlc, rec.version.node_id, rec.tombstone)
                if len(chunk) >= RESTORE_CHUNK:
                    await self._writer.replicate_records(chunk, level)
                    replayed += len(chunk)
                    chunk = []
            if chunk:
                await self._writer.replicate_records(chunk, level)
                replayed += len(chunk)
        return replayed, sum(1 for _, _, tomb in newest.values() if not tomb)

"""What a node does for the Admin service's backup calls: take a snapshot, check one, list and
delete them, and restore one into the cluster, at a folder or in a bucket (:mod:`.locations`).

Restore replays every snapshot's records through the cluster's ordinary write path with their
original versions. Replicas keep the newest version, so the duplicates between snapshots cost only
time, and a backup restores into a cluster of any size. The snapshots are read together as one
key-ordered stream and replayed in chunks, so a restore holds one chunk however large the backup.
The stream is read on a thread of its own (a bucket's reads are network calls), one chunk at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from operator import attrgetter
from typing import Protocol

from kvnode.backup.locations import Backups, Listing, backups_at
from kvnode.backup.objectstore import is_url
from kvnode.backup.snapshots import Manifest
from kvnode.cluster.topology import Topology
from kvnode.core.errors import FailedPrecondition, KVError
from kvnode.core.levels import Level, single_key_only
from kvnode.core.names import new_backup_id
from kvnode.core.records import Record, chunked
from kvnode.metrics import NodeMetrics
from kvnode.storage.engine import Storage
from kvnode.storage.groupcommit import GroupCommitter
from kvnode.storage.ops import PutMeta
from kvnode.storage.schema import Meta

RESTORE_CHUNK = 500
"""Most records in one replayed chunk (which also keeps to one message's byte budget)."""


class RecordWriter(Protocol):
    """Writes records with the versions they carry, at a level (the coordinator)."""

    async def replicate_records(self, records: list[Record], level: Level) -> None: ...


class LiveKeys:
    """Counts the distinct keys whose newest version is not a tombstone, in a key-ordered stream
    of records that it passes on unchanged."""

    def __init__(self) -> None:
        self.count = 0

    def watch(self, records: Iterable[Record]) -> Iterator[Record]:
        for _, group in groupby(records, key=attrgetter("key")):
            versions = list(group)  # at most one per snapshot: keys are unique within one
            # max keeps the first of equal versions, as the newest-so-far comparison always did;
            # equal versions are one write anyway, so they agree on the tombstone.
            self.count += not max(versions, key=attrgetter("version")).tombstone
            yield from versions


class BackupService:
    """A node's backups: its own snapshots, and restores through the cluster's write path.
    ``hmac_key`` signs and checks the manifests of backups in buckets (None: no bucket backups);
    ``encryption_key`` encrypts their snapshots (None: not encrypted)."""

    def __init__(
        self,
        node_id: str,
        storage: Storage,
        committer: GroupCommitter,
        topology: Topology,
        writer: RecordWriter,
        metrics: NodeMetrics,
        hmac_key: bytes | None = None,
        encryption_key: bytes | None = None,
    ) -> None:
        self._node_id = node_id
        self._storage = storage
        self._committer = committer
        self._topology = topology
        self._writer = writer
        self._metrics = metrics
        self._hmac_key = hmac_key
        self._encryption_key = encryption_key
        self.last_backup_unix = storage.get_meta(Meta.LAST_BACKUP) or 0
        metrics.last_backup.set(self.last_backup_unix)

    def _at(self, location: str) -> Backups:
        return backups_at(location, self._hmac_key, self._encryption_key)

    async def take(self, directory: str, backup_id: str) -> Manifest:
        """This node's snapshot and manifest under ``directory/backup_id/<node>`` (a new id when
        none is given); taking one that exists returns its manifest. ``directory`` may be a URL."""
        membership = self._topology.membership
        target = "bucket" if is_url(directory) else "folder"
        started = time.monotonic()
        try:
            manifest = await asyncio.to_thread(
                self._at(directory).take,
                self._storage,
                backup_id or new_backup_id(),
                node_id=self._node_id,
                epoch=membership.epoch,
                replication_factor=membership.replication_factor,
            )
        except OSError as exc:
            self._metrics.backups.labels("failed").inc()
            raise FailedPrecondition(f"cannot write backup to {directory}: {exc.strerror or exc}") from None
        except KVError:
            self._metrics.backups.labels("failed").inc()
            raise
        self._metrics.backup_seconds.labels(target).observe(time.monotonic() - started)
        self._metrics.backup_bytes.labels(target).inc(manifest.size_bytes)
        self.last_backup_unix = manifest.created_unix
        self._metrics.last_backup.set(manifest.created_unix)
        self._metrics.backups.labels("ok").inc()
        await self._committer.submit(PutMeta.of(Meta.LAST_BACKUP, manifest.created_unix))
        return manifest

    async def verify(
        self, directory: str, backup_id: str, node_id: str = ""
    ) -> tuple[list[Manifest], list[str]]:
        """The backup's manifests and the problems found (none when it is good)."""
        return await asyncio.to_thread(self._at(directory).verify, backup_id, node_id)

    async def list(self, directory: str) -> list[Listing]:
        return await asyncio.to_thread(self._at(directory).catalog)

    async def delete(self, directory: str, backup_id: str) -> bool:
        return await asyncio.to_thread(self._at(directory).delete, backup_id)

    async def restore(self, directory: str, backup_id: str, level: Level) -> tuple[int, int]:
        """Replay a verified backup through the write path. Returns (records replayed, distinct
        live keys).

        Every record of every snapshot is replayed, in key order across the snapshots; memory holds
        one chunk and one record per snapshot, whatever the size of the backup.
        """
        single_key_only(level, "restore writes")
        backups = self._at(directory)
        manifests, problems = await self.verify(directory, backup_id)
        if problems:
            raise FailedPrecondition(f"backup {backup_id} failed verification: {'; '.join(problems)}")
        live = LiveKeys()
        replayed = 0
        loop = asyncio.get_running_loop()
        reader = ThreadPoolExecutor(1, thread_name_prefix="restore")
        # The reader stops (finishing a read under way, if the call was cancelled) before the
        # snapshots close: a stream is never closed while its thread reads it.
        with backups.records(manifests) as records, reader:
            chunks = chunked(live.watch(records), RESTORE_CHUNK)
            while chunk := await loop.run_in_executor(reader, next, chunks, None):
                await self._writer.replicate_records(chunk, level)
                replayed += len(chunk)
        return replayed, live.count

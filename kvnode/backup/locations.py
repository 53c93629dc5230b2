"""Where backups go: a folder the node mounts, or a bucket named by URL. Both are
:class:`Backups`, so the service takes, checks, lists, deletes and replays them with one code path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from kvnode.backup import snapshots
from kvnode.backup.buckets import BucketBackups
from kvnode.backup.objectstore import is_url
from kvnode.backup.snapshots import Manifest
from kvnode.core.errors import FailedPrecondition
from kvnode.core.records import Record
from kvnode.storage.engine import Storage

Listing = tuple[str, list[Manifest], list[str]]
"""A backup's id, its complete snapshots' manifests and its incomplete node folders."""


class Backups(Protocol):
    """One backup location. Every call blocks: the service runs them in a thread."""

    def take(
        self, storage: Storage, backup_id: str, *, node_id: str, epoch: int, replication_factor: int
    ) -> Manifest: ...

    def verify(self, backup_id: str, node_id: str = "") -> tuple[list[Manifest], list[str]]: ...

    def catalog(self) -> list[Listing]: ...

    def delete(self, backup_id: str) -> bool: ...

    def records(self, manifests: list[Manifest]) -> contextlib.AbstractContextManager[Iterator[Record]]: ...


class FolderBackups:
    """The backups in a folder (:mod:`.snapshots`)."""

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def take(
        self, storage: Storage, backup_id: str, *, node_id: str, epoch: int, replication_factor: int
    ) -> Manifest:
        return snapshots.take_snapshot(
            storage,
            self._directory,
            backup_id,
            node_id=node_id,
            epoch=epoch,
            replication_factor=replication_factor,
        )

    def verify(self, backup_id: str, node_id: str = "") -> tuple[list[Manifest], list[str]]:
        return snapshots.verify(self._directory, backup_id, node_id)

    def catalog(self) -> list[Listing]:
        return [(ms[0].backup_id, ms, []) for ms in snapshots.list_backups(self._directory)]

    def delete(self, backup_id: str) -> bool:
        return snapshots.delete_backup(self._directory, backup_id)

    def records(self, manifests: list[Manifest]) -> contextlib.AbstractContextManager[Iterator[Record]]:
        return snapshots.merged_records([Path(m.path) for m in manifests])


def backups_at(location: str, hmac_key: bytes | None, encryption_key: bytes | None = None) -> Backups:
    """The backups at a folder path or an ``s3://`` (``gs://``, ``az://``) URL. A bucket needs the
    store's HMAC key, which signs and checks its manifests; with an encryption key, its snapshots
    are encrypted too."""
    if not is_url(location):
        return FolderBackups(location)
    if hmac_key is None:
        raise FailedPrecondition(
            f"backups to {location} need the store's HMAC key: start the node with --backup-hmac-key-file"
        )
    return BucketBackups(location, hmac_key, encryption_key)

"""A node's claim on its data directory, and opening the store inside it.

Two processes writing one LMDB environment would each believe they own it; two nodes with different
ids sharing one directory would silently merge replicas. Both are refused at start-up: an exclusive
``flock`` on ``kvnode.lock`` for the first, the node id stored in the data for the second.

A node that was away longer than the tombstone grace period has its old data set aside and starts
empty (it then rebuilds from its peers), because replaying that data could resurrect deletes.

A damaged data file (truncated, or its meta pages broken: :mod:`kvnode.storage.lmdbfile`) is never
opened. A node that has other replicas to copy its data from sets the file aside, keeps it for
inspection, starts empty and rebuilds, as after a lost volume; a node without one (alone, or with a
replication factor of 1) refuses to start and says what to do, so it never gives up its only copy
by itself.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from typing import NamedTuple

from kvnode.core.errors import StartupError
from kvnode.storage.engine import Storage
from kvnode.storage.lmdbfile import DamagedFile
from kvnode.storage.schema import Meta

log = logging.getLogger(__name__)


class DataDirError(StartupError):
    """The data directory cannot be used by this node. The message says why and what to do."""


class DataDirLock:
    """Held for the life of the node process; the kernel releases it if the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path / "kvnode.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DataDirError(f"cannot use data dir {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise DataDirError(
                f"data dir {path} is in use by another kvnode process (pid {holder}); "
                "stop it or choose another --data-dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def check_node_id(path: Path, stored: str | None, node_id: str) -> None:
    """Refuse a data dir that belongs to another node."""
    if stored is not None and stored != node_id:
        raise DataDirError(
            f"data dir {path} belongs to node {stored!r}, not {node_id!r}; each node needs its own --data-dir"
        )


class Opened(NamedTuple):
    storage: Storage
    fresh: bool
    """The store holds no data from before."""
    set_aside: Path | None
    """Where the data it held went (stale or damaged): the node must rebuild it from its peers."""


def open_store(
    data_dir: Path,
    node_id: str,
    *,
    partitions: int,
    map_size: int,
    max_map_size: int,
    stale_after: float | None,
    rebuild_damaged: bool = False,
) -> Opened:
    """Open (or create) the store in ``data_dir/lmdb``. A store last alive more than ``stale_after``
    seconds ago is set aside (None: never); so is a damaged one if ``rebuild_damaged`` (the node
    has other replicas to rebuild from), else a damaged one is refused."""
    path = data_dir / "lmdb"
    fresh = not (path / "data.mdb").exists()
    try:
        storage = _open(path, partitions, map_size, max_map_size)
    except DamagedFile as exc:
        if not rebuild_damaged:
            raise DataDirError(
                f"{exc}. kvnode does not start on a damaged data file, and this node has no other "
                "replica to rebuild it from (it runs alone, or --replication-factor is 1). Keep the "
                f"file for inspection, then restore a backup into an empty --data-dir, or move {path} "
                "away to start empty"
            ) from None
        aside = _set_aside(data_dir, "damaged")
        log.error(
            "%s; the damaged data was moved to %s and this node will rebuild from its peers "
            "(delete it once no longer needed)",
            exc,
            aside,
        )
        return Opened(_open(path, partitions, map_size, max_map_size), True, aside)
    try:
        check_node_id(data_dir, storage.get_meta(Meta.NODE_ID), node_id)
    except DataDirError:
        storage.close()
        raise
    alive_ms = storage.get_meta(Meta.ALIVE_MS)
    if fresh or alive_ms is None or stale_after is None:
        return Opened(storage, fresh, None)
    away = time.time() - alive_ms / 1000
    if away <= stale_after:
        return Opened(storage, fresh, None)
    storage.close()
    aside = _set_aside(data_dir, "stale")
    log.warning(
        "this node was away for %.0fs, longer than the tombstone grace period (%.0fs); "
        "its data was moved to %s and it will rebuild from its peers",
        away,
        stale_after,
        aside,
    )
    return Opened(_open(path, partitions, map_size, max_map_size), True, aside)


def _set_aside(data_dir: Path, why: str) -> Path:
    """Move the store out of the node's way, keeping it: ``<data-dir>/<why>-<time>``."""
    stamp = int(time.time())
    aside = data_dir / f"{why}-{stamp}"
    while aside.exists():
        stamp += 1
        aside = data_dir / f"{why}-{stamp}"
    (data_dir / "lmdb").rename(aside)
    return aside


def _open(path: Path, partitions: int, map_size: int, max_map_size: int) -> Storage:
    """The store, laid out in the partition count its data already has, whatever was asked."""
    storage = Storage(path, partitions=partitions, map_size=map_size, max_map_size=max_map_size)
    stored = storage.get_meta(Meta.PARTITIONS)
    if stored and stored != partitions:
        storage.partitions = stored
        log.warning("data dir is laid out in %d partitions; ignoring --partitions=%d", stored, partitions)
    return storage

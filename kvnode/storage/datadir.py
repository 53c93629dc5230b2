"""A node's claim on its data directory, and opening the store inside it.

Two processes writing one LMDB environment would each believe they own it; two nodes with different
ids sharing one directory would silently merge replicas. Both are refused at start-up: an exclusive
``flock`` on ``kvnode.lock`` for the first, the node id stored in the data for the second.

A node that was away longer than the tombstone grace period has its old data set aside and starts
empty (it then rebuilds from its peers), because replaying that data could resurrect deletes.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

from kvnode.core.errors import StartupError
from kvnode.storage.engine import Storage
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


def open_store(
    data_dir: Path,
    node_id: str,
    *,
    partitions: int,
    map_size: int,
    max_map_size: int,
    stale_after: float | None,
) -> tuple[Storage, bool]:
    """Open (or create) the store in ``data_dir/lmdb``; returns it and whether it holds no data from
    before. A store last alive more than ``stale_after`` seconds ago is set aside (None: never)."""
    path = data_dir / "lmdb"
    fresh = not (path / "data.mdb").exists()
    storage = _open(path, partitions, map_size, max_map_size)
    try:
        check_node_id(data_dir, storage.get_meta(Meta.NODE_ID), node_id)
    except DataDirError:
        storage.close()
        raise
    alive_ms = storage.get_meta(Meta.ALIVE_MS)
    if fresh or alive_ms is None or stale_after is None:
        return storage, fresh
    away = time.time() - alive_ms / 1000
    if away <= stale_after:
        return storage, fresh
    storage.close()
    aside = data_dir / f"stale-{int(time.time())}"
    path.rename(aside)
    log.warning(
        "this node was away for %.0fs, longer than the tombstone grace period (%.0fs); "
        "its data was moved to %s and it will rebuild from its peers",
        away,
        stale_after,
        aside,
    )
    return _open(path, partitions, map_size, max_map_size), True


def _open(path: Path, partitions: int, map_size: int, max_map_size: int) -> Storage:
    """The store, laid out in the partition count its data already has, whatever was asked."""
    storage = Storage(path, partitions=partitions, map_size=map_size, max_map_size=max_map_size)
    stored = storage.get_meta(Meta.PARTITIONS)
    if stored and stored != partitions:
        storage.partitions = stored
        log.warning("data dir is laid out in %d partitions; ignoring --partitions=%d", stored, partitions)
    return storage

"""A node's claim on its data directory.

Two processes writing one LMDB environment would each believe they own it; two nodes with different
ids sharing one directory would silently merge replicas. Both are refused at start-up: an exclusive
``flock`` on ``kvnode.lock`` for the first, the node id stored in the data for the second.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from kvnode.core.errors import StartupError


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


def check_node_id(path: Path, stored: bytes | None, node_id: str) -> None:
    """Refuse a data dir that belongs to another node."""
    if stored is not None and stored.decode() != node_id:
        raise DataDirError(
            f"data dir {path} belongs to node {stored.decode()!r}, not {node_id!r}; "
            "each node needs its own --data-dir"
        )

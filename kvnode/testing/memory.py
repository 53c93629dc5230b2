"""The peak memory of node processes, as a pod's limit would count it.

A node is a pod: the ``kvnode`` server and its storage writer, so each node's figure is the sum
over both. The kernel's high-water mark (``VmHWM``) is exact, not sampled, and can be reset
(``/proc/PID/clear_refs``); it also counts the pages of the LMDB file the node has touched, which a
container's memory cgroup can reclaim. The anonymous memory (``RssAnon``, what the OOM killer
weighs) is sampled every 10 ms beside it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def _family(pid: int) -> list[int]:
    """The pid and its children (the server and its storage writer)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(c) for c in children)]


def _status(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` size in bytes (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Peak:
    rss: int = 0
    anon: int = 0


class PeakMemory:
    """The peak memory of the most demanding node among ``pids`` from :meth:`reset` until
    :meth:`read`. A context manager: it samples on a thread until closed."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self._anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def now(self, field: str = "RssAnon") -> int:
        """``field`` of the node that holds the most of it, right now."""
        return max(sum(_status(p, field) for p in _family(pid)) for pid in self.pids)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self._anon = max(self._anon, self.now())

    def reset(self) -> None:
        for pid in self.pids:
            for p in _family(pid):
                with contextlib.suppress(OSError):
                    Path(f"/proc/{p}/clear_refs").write_text("5")
        self._anon = self.now()

    def read(self) -> Peak:
        return Peak(self.now("VmHWM"), max(self._anon, self.now()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> PeakMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""A live progress line for kvctl's long calls (backups, restores), on stderr.

The Admin calls are single requests, so what kvctl can show while one runs is its elapsed time;
when it ends, the bytes it moved and their rate. The live line is drawn only on a terminal (or
with ``--progress``), so scripts and logs get the final lines alone.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TextIO

TICK = 0.5


def rate(size_bytes: int, seconds: float) -> str:
    """``12.3 MB in 4.0 s (3.1 MB/s)``."""
    megabytes = size_bytes / 1e6
    return f"{megabytes:.1f} MB in {seconds:.1f} s ({megabytes / max(seconds, 1e-3):.1f} MB/s)"


class Progress:
    """``with Progress("kv-0: backing up", live) as p``: redraws ``what`` and the elapsed time
    every half second while the block runs; ``p.seconds`` is its duration afterwards."""

    def __init__(self, what: str, live: bool, stream: TextIO = sys.stderr) -> None:
        self._what = what
        self._live = live
        self._stream = stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._draw, daemon=True)
        self._started = 0.0
        self.seconds = 0.0

    def _draw(self) -> None:
        while not self._stop.wait(TICK):
            elapsed = time.monotonic() - self._started
            self._stream.write(f"\rkvctl: {self._what} ... {elapsed:.0f} s ")
            self._stream.flush()

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        if self._live:
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.seconds = time.monotonic() - self._started
        if self._live:
            self._stop.set()
            self._thread.join()
            self._stream.write("\r\x1b[K")  # clear the live line; the final one follows
            self._stream.flush()


def live_wanted(forced: bool, stream: TextIO = sys.stderr) -> bool:
    return forced or stream.isatty()

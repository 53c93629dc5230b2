"""Hybrid logical clock.

A timestamp is ``wall_ms << 16 | logical``: it follows the wall clock, yet never goes backwards and
never repeats on one node, so ``(hlc, node_id)`` names every write uniquely. Observing a remote
timestamp moves the clock past it, which keeps causally later writes newer even across skewed
clocks. The clock is seeded from a persisted high-water mark so it stays monotonic across restarts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

LOGICAL_BITS = 16


def physical_ms(hlc: int) -> int:
    """The wall-clock milliseconds part of a timestamp."""
    return hlc >> LOGICAL_BITS


def from_ms(ms: int) -> int:
    """The smallest timestamp at a wall-clock millisecond."""
    return ms << LOGICAL_BITS


class HybridClock:
    """Not thread-safe: the node's event loop is its only user."""

    def __init__(
        self,
        floor: int = 0,
        *,
        offset_ms: int = 0,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        self._last = floor
        self._offset_ms = offset_ms
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)

    @property
    def last(self) -> int:
        """The newest timestamp handed out or observed."""
        return self._last

    def wall(self) -> int:
        """The (possibly skewed, for tests) wall clock as a timestamp."""
        return from_ms(self._wall_ms() + self._offset_ms)

    def now(self) -> int:
        """A timestamp greater than every one this clock has returned or observed."""
        wall = self.wall()
        self._last = wall if wall > self._last else self._last + 1
        return self._last

    def observe(self, remote: int) -> None:
        """Move past a timestamp seen in a message from another node."""
        if remote > self._last:
            self._last = remote

"""Hybrid logical clock.

A timestamp is ``wall_ms << 16 | logical``: it follows the wall clock, yet never goes backwards and
never repeats on one node, so ``(hlc, node_id)`` names every write uniquely. Observing a remote
timestamp moves the clock past it, which keeps causally later writes newer even across skewed
clocks. The clock is seeded from a persisted high-water mark so it stays monotonic across restarts.

A timestamp more than ``max_ahead_ms`` ahead of this node's wall clock is refused, never observed:
one message with a clock near 2^64 would otherwise move every later timestamp of the cluster past
it, for good (the clock is persisted), and one record with a far-future version would win every
later write to its key. Only timestamps past the clock's own newest are checked: after the wall
clock jumps back, the clock (seeded from its persisted high-water mark) is legitimately ahead of
the wall, and so are the versions it hands out. The bound is taken from the wall, not from the
clock, so that messages cannot ratchet the clock forward a bound at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kvnode.core.errors import InvalidArgument

LOGICAL_BITS = 16
DEFAULT_MAX_AHEAD_MS = 1000


def physical_ms(hlc: int) -> int:
    """The wall-clock milliseconds part of a timestamp."""
    return hlc >> LOGICAL_BITS


def from_ms(ms: int) -> int:
    """The smallest timestamp at a wall-clock millisecond."""
    return ms << LOGICAL_BITS


class ClockAhead(InvalidArgument):
    """A clock or a version too far ahead of this node's wall clock (--max-clock-offset)."""


class HybridClock:
    """Not thread-safe: the node's event loop is its only user."""

    def __init__(
        self,
        floor: int = 0,
        *,
        offset_ms: int = 0,
        max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        self._last = floor
        self._offset_ms = offset_ms
        self.max_ahead_ms = max_ahead_ms
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

    def ahead_ms(self, remote: int) -> int:
        """How many milliseconds ``remote`` is ahead of this node's wall clock (<= 0: not ahead)."""
        return physical_ms(remote) - (self._wall_ms() + self._offset_ms)

    def check(self, remote: int, what: str) -> None:
        """Refuse ``remote`` (a clock or a version, named by ``what``) if it is too far ahead."""
        ahead = self.ahead_ms(remote)
        if ahead > self.max_ahead_ms:
            raise ClockAhead(
                f"{what} is {ahead} ms ahead of this node's clock, more than the "
                f"{self.max_ahead_ms} ms allowed (--max-clock-offset)"
            )

    def observe(self, remote: int, what: str = "the sender's clock") -> None:
        """Move past a timestamp seen in a message from another node; one too far ahead raises
        :class:`ClockAhead` and changes nothing."""
        if remote > self._last:
            self.check(remote, what)
            self._last = remote

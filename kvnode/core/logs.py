"""Logging that a flood cannot turn into a full disk: at most one line per kind of event per
interval, and the next line says how many were held back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

INTERVAL = 10.0


class RateLimitedLog:
    """``log(key, level, message, *args)`` writes at most once per ``interval`` seconds per key."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, key: str, level: int, message: str, *args: object, exc_info: bool = False) -> None:
        now = self._clock()
        if now < self._next.get(key, 0.0):
            self._held[key] = self._held.get(key, 0) + 1
            return
        self._next[key] = now + self._interval
        held = self._held.pop(key, 0)
        if held:
            message += f" ({held} more like it in the last {self._interval:g}s not logged)"
        self._logger.log(level, message, *args, exc_info=exc_info)

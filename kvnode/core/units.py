"""Counts, sizes and durations as people type them into flags, environment variables and specs."""

from __future__ import annotations

import re

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

_SIZE = re.compile(r"^(?P<num>\d+)(?P<unit>[KMGT]i?B?|B)?$", re.IGNORECASE)
_DURATION = re.compile(r"^(?P<num>\d+(\.\d+)?)(?P<unit>ms|s|m|h|d)?$")


def parse_size(value: str) -> int:
    """Parse a byte size: 4096, 64MiB, 1GB, 2G (binary units)."""
    match = _SIZE.match(value.strip())
    if not match:
        raise ValueError(f"invalid size {value!r}: expected a number with an optional unit (KiB, MiB, GiB)")
    unit = (match["unit"] or "B").upper().rstrip("B").rstrip("I")
    return int(match["num"]) * {"": 1, "K": KIB, "M": MIB, "G": GIB, "T": 1024 * GIB}[unit]


def parse_duration(value: str) -> float:
    """Parse a duration in seconds: 30, 250ms, 10s, 5m, 3h, 10d."""
    match = _DURATION.match(value.strip())
    if not match:
        raise ValueError(f"invalid duration {value!r}: expected e.g. 250ms, 10s, 5m, 3h, 10d")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match["unit"] or "s"]
    return float(match["num"]) * scale


def positive_int(value: str) -> int:
    """Parse a count of at least 1."""
    number = int(value)
    if number < 1:
        raise ValueError(f"{value} must be at least 1")
    return number

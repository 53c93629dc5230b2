"""Sizes, durations and counts as people type them into flags and specs."""

from __future__ import annotations

import re

import pytest

from kvnode.core.units import GIB, KIB, MIB, parse_duration, parse_size, positive_int


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("64MiB", 64 * MIB), ("1g", GIB), ("2G", 2 * GIB), ("8KB", 8 * KIB), (" 5Ki ", 5 * KIB)],
)
def test_sizes_are_binary_with_or_without_a_unit(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("250ms", 0.25), ("1.5s", 1.5), ("5m", 300.0), ("3h", 10800.0), ("10d", 864000.0)],
)
def test_durations_are_seconds_unless_a_unit_says_otherwise(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_malformed_values_are_refused_saying_what_was_expected() -> None:
    with pytest.raises(ValueError, match="invalid size 'lots'"):
        parse_size("lots")
    with pytest.raises(ValueError, match=re.escape("invalid duration 'soon': expected e.g. 250ms")):
        parse_duration("soon")
    with pytest.raises(ValueError, match="must be at least 1"):
        positive_int("0")
    assert positive_int("3") == 3

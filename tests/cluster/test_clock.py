"""The hybrid logical clock: strictly increasing, following the wall clock but never back, and
moving past what it observes."""

from __future__ import annotations

import pytest

from kvnode.cluster.clock import ClockAhead, HybridClock, from_ms, physical_ms


def test_now_is_strictly_increasing_when_the_wall_clock_stands_still() -> None:
    clock = HybridClock(wall_ms=lambda: 1000)
    stamps = [clock.now() for _ in range(5)]
    assert stamps == sorted(set(stamps))
    assert all(physical_ms(s) == 1000 for s in stamps)


def test_now_follows_the_wall_clock() -> None:
    wall = [1000]
    clock = HybridClock(wall_ms=lambda: wall[0])
    first = clock.now()
    wall[0] = 2000
    assert clock.now() == from_ms(2000) > first


def test_clock_never_goes_back_when_the_wall_clock_does() -> None:
    wall = [5000]
    clock = HybridClock(wall_ms=lambda: wall[0])
    before = clock.now()
    wall[0] = 1000
    assert clock.now() > before


def test_observe_moves_past_a_remote_timestamp() -> None:
    clock = HybridClock(wall_ms=lambda: 1000)
    remote = from_ms(1900) + 7  # 900 ms ahead: within the default bound of 1 s
    clock.observe(remote)
    assert clock.now() > remote


def test_a_timestamp_too_far_ahead_is_refused_and_not_observed() -> None:
    """One message with a clock near 2^64 must not move the clock: it would never come back."""
    clock = HybridClock(wall_ms=lambda: 1000, max_ahead_ms=500)
    clock.observe(from_ms(1400))
    last = clock.last
    for remote in (from_ms(1501), 2**64 - 2):
        with pytest.raises(ClockAhead, match="ahead of this node's clock, more than the 500 ms allowed"):
            clock.observe(remote, "peer kv-9's clock")
        assert clock.last == last
    assert clock.now() < from_ms(1501)


def test_floor_keeps_the_clock_monotonic_across_restarts() -> None:
    persisted = HybridClock(wall_ms=lambda: 9000).now()
    restarted = HybridClock(persisted, wall_ms=lambda: 1000)
    assert restarted.now() > persisted


def test_offset_skews_the_wall_clock() -> None:
    clock = HybridClock(offset_ms=500, wall_ms=lambda: 1000)
    assert physical_ms(clock.now()) == 1500

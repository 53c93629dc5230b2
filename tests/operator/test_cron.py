from __future__ import annotations

import datetime

import pytest
from kvoperator.cron import ScheduleError, parse_schedule

UTC = datetime.UTC


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("0 3 * * *", "2025-01-01T02:59:30", "2025-01-01T03:00:00"),
        ("0 3 * * *", "2025-01-01T03:00:00", "2025-01-02T03:00:00"),
        ("*/15 * * * *", "2025-01-01T10:07:00", "2025-01-01T10:15:00"),
        ("0 */6 * * 1-5", "2025-01-03T19:00:00", "2025-01-06T00:00:00"),  # Friday evening -> Monday
        ("30 2 1 * *", "2025-01-15T00:00:00", "2025-02-01T02:30:00"),
        ("0 0 29 2 *", "2025-03-01T00:00:00", "2028-02-29T00:00:00"),
        ("0 12 1 * MON", "2025-01-02T00:00:00", "2025-01-06T12:00:00"),  # day-of-month OR weekday
        ("0 0 * JAN,JUL SUN", "2025-02-01T00:00:00", "2025-07-06T00:00:00"),
        ("@hourly", "2025-01-01T10:30:00", "2025-01-01T11:00:00"),
        ("@daily", "2025-01-01T10:30:00", "2025-01-02T00:00:00"),
        ("@weekly", "2025-01-01T10:30:00", "2025-01-05T00:00:00"),
        ("@every 90s", "2025-01-01T10:30:00", "2025-01-01T10:31:30"),
        ("5,10-12 * * * *", "2025-01-01T10:10:00", "2025-01-01T10:11:00"),
        ("0 0 * * 7", "2025-01-01T00:00:00", "2025-01-05T00:00:00"),  # 7 is Sunday too
    ],
)
def test_next_run(schedule: str, after: str, expected: str) -> None:
    assert parse_schedule(schedule).next_after(at(after)) == at(expected)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("* * * *", "expected 5 fields"),
        ("60 * * * *", "outside 0-59"),
        ("*/0 * * * *", "bad step"),
        ("5-1 * * * *", "runs backwards"),
        ("@sometimes", "unknown macro"),
        ("@every 0s", "at least 1s"),
        ("@every soon", "invalid duration"),
        ("a * * * *", "not a number"),
        ("0 0 31 2 *", "never runs"),
    ],
)
def test_bad_schedules_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ScheduleError, match=problem):
        parse_schedule(text).next_after(at("2025-01-01T00:00:00"))


def test_missed_runs_collapse_into_the_newest() -> None:
    hourly = parse_schedule("0 * * * *")
    assert hourly.last_due(at("2025-01-01T00:00:00"), at("2025-01-01T05:30:00")) == at("2025-01-01T05:00:00")
    assert hourly.last_due(at("2025-01-01T05:00:00"), at("2025-01-01T05:30:00")) is None
    every = parse_schedule("@every 10s")
    assert every.last_due(at("2025-01-01T00:00:00"), at("2025-01-01T00:00:35")) == at("2025-01-01T00:00:30")

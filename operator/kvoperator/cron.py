"""Backup schedules: five-field cron expressions (UTC), the usual @-macros, and ``@every <duration>``.

    "0 3 * * *"      every day at 03:00 UTC
    "*/15 * * * *"   every 15 minutes
    "0 */6 * * 1-5"  every 6 hours on weekdays
    "@daily"         "0 0 * * *";  also @hourly, @weekly, @monthly, @yearly/@annually, @midnight
    "@every 30m"     every 30 minutes after the previous run (units ms, s, m, h, d)

Day-of-month and day-of-week combine as in Vixie cron: when both are restricted, either matches.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from kvnode.core.units import parse_duration

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    )
}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
# (name, low, high, names)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_SEARCH_LIMIT = datetime.timedelta(days=366 * 5)


class ScheduleError(ValueError):
    pass


def _value(text: str, low: int, high: int, names: dict[str, int], what: str) -> int:
    key = text.upper()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise ScheduleError(f"{what}: {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise ScheduleError(f"{what}: {value} is outside {low}-{high}")
    return value


def _field(text: str, low: int, high: int, names: dict[str, int], what: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ScheduleError(f"{what}: empty list item in {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{what}: bad step {step_text!r}")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _value(a, low, high, names, what), _value(b, low, high, names, what)
            if start > end:
                raise ScheduleError(f"{what}: range {base!r} runs backwards")
        else:
            start = _value(base, low, high, names, what)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: a fixed interval, or the sets of minutes, hours, days... it runs at."""

    text: str
    interval: datetime.timedelta | None = None
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    any_day: bool = True
    any_weekday: bool = True

    def next_after(self, after: datetime.datetime) -> datetime.datetime:
        """The first run strictly after ``after`` (an aware datetime; the result is in UTC)."""
        after = after.astimezone(datetime.UTC)
        if self.interval is not None:
            return after + self.interval
        t = after.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
        limit = after + _SEARCH_LIMIT
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + datetime.timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + datetime.timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0) + datetime.timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t += datetime.timedelta(minutes=1)
                continue
            return t
        raise ScheduleError(f"{self.text!r} never runs")

    def _day_matches(self, t: datetime.datetime) -> bool:
        weekday = (t.weekday() + 1) % 7  # Python: Monday=0; cron: Sunday=0
        day_ok = t.day in self.days
        weekday_ok = weekday in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return weekday_ok
        if self.any_weekday:
            return day_ok
        return day_ok or weekday_ok

    def last_due(self, since: datetime.datetime, now: datetime.datetime) -> datetime.datetime | None:
        """The newest run time in (since, now], or None if no run is due. Runs missed while the
        operator was away collapse into this one."""
        due = self.next_after(since)
        if due > now:
            return None
        if self.interval is not None:
            missed = (now - due) // self.interval
            return due + missed * self.interval
        while True:
            following = self.next_after(due)
            if following > now:
                return due
            due = following


def parse_schedule(text: str) -> Schedule:
    """Parse a schedule; ScheduleError says what is wrong with it."""
    raw = text.strip()
    if raw.startswith("@every"):
        try:
            seconds = parse_duration(raw[len("@every") :].strip())
        except ValueError as exc:
            raise ScheduleError(f"{text!r}: {exc}") from None
        if seconds < 1:
            raise ScheduleError(f"{text!r}: the interval must be at least 1s")
        return Schedule(raw, interval=datetime.timedelta(seconds=seconds))
    expanded = MACROS.get(raw.lower(), raw)
    if expanded.startswith("@"):
        raise ScheduleError(f"{text!r}: unknown macro (use {', '.join(MACROS)} or @every <duration>)")
    parts = expanded.split()
    if len(parts) != 5:
        raise ScheduleError(f"{text!r}: expected 5 fields (minute hour day-of-month month day-of-week)")
    fields = [
        _field(part, low, high, names, f"{text!r} {what}")
        for part, (what, low, high, names) in zip(parts, _FIELDS, strict=True)
    ]
    weekdays = frozenset(d % 7 for d in fields[4])
    return Schedule(
        raw,
        minutes=fields[0],
        hours=fields[1],
        days=fields[2],
        months=fields[3],
        weekdays=weekdays,
        any_day=parts[2].startswith("*"),
        any_weekday=parts[4].startswith("*"),
    )

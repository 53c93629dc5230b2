"""Time stamps as Kubernetes writes them (RFC 3339, UTC), and back.

Status records that decisions depend on (when a pod began to fail, when a retry is due) keep
microseconds, as Kubernetes' MicroTime does: thresholds of a few seconds must not round away.
"""

from __future__ import annotations

import datetime


def parse_time(value: object) -> datetime.datetime | None:
    """An aware datetime, or None for a missing or malformed stamp."""
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def format_time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)

"""What the operator's decisions remember from one pass to the next, kept in the KVStore's status.

Some decisions depend on the past: how long a pod's node has failed health checks, whether a
rebuild was already reported, when a failed operation may run again and why it failed, which
scale-down refusal was already announced. A pass reads that memory from the status it observed,
the steps update it, and the status step writes it back with the rest of the status. Each record
carries its time stamps, as FoundationDB's operator keeps its ProcessGroup conditions, so an
operator that restarts anywhere takes up exactly where the last one stopped.

Status fields: ``podHealth[]``, ``retries[]`` and ``scaleDownRefusal`` (docs/operator.md).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from kvoperator.timestamps import format_micro_time, parse_time

POD_HEALTH = "podHealth"
RETRIES = "retries"
SCALE_DOWN_REFUSAL = "scaleDownRefusal"
FIELDS = (POD_HEALTH, RETRIES, SCALE_DOWN_REFUSAL)


class RebuildReported(StrEnum):
    """How much of a node's rebuild of a lost volume was reported (events and metric)."""

    STARTED = "Started"
    FINISHED = "Finished"


@dataclass(frozen=True)
class PodRecord:
    """What was noticed about one start of a pod's node container (the pod's uid and the
    container's restart count): since when its node fails health checks, and how much of its
    rebuild was reported. A new start of the container begins with a fresh record."""

    name: str
    uid: str
    restart_count: int
    failing_since: datetime.datetime | None = None
    rebuild: RebuildReported | None = None

    def is_for(self, uid: str, restart_count: int) -> bool:
        return self.uid == uid and self.restart_count == restart_count

    @property
    def empty(self) -> bool:
        return self.failing_since is None and self.rebuild is None

    def to_status(self) -> dict[str, Any]:
        item: dict[str, Any] = {"name": self.name, "uid": self.uid, "restartCount": self.restart_count}
        if self.failing_since is not None:
            item["failingSince"] = format_micro_time(self.failing_since)
        if self.rebuild is not None:
            item["rebuild"] = self.rebuild.value
        return item

    @classmethod
    def from_status(cls, item: Mapping[str, Any]) -> PodRecord | None:
        """The record a status item holds; None for one that is malformed (ignored)."""
        try:
            rebuild = RebuildReported(item["rebuild"]) if item.get("rebuild") else None
            return cls(
                str(item["name"]),
                str(item.get("uid", "")),
                int(item.get("restartCount") or 0),
                parse_time(item.get("failingSince")),
                rebuild,
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Retry:
    """One step's failed operation: it does not start again before ``retry_after``. A failure
    with a ``reason`` is reported (Degraded) until the step clears it."""

    operation: str
    failed_at: datetime.datetime
    retry_after: datetime.datetime
    reason: str = ""
    message: str = ""

    def to_status(self) -> dict[str, Any]:
        item = {
            "operation": self.operation,
            "lastFailureTime": format_micro_time(self.failed_at),
            "retryAfter": format_micro_time(self.retry_after),
        }
        if self.reason:
            item.update(reason=self.reason, message=self.message)
        return item

    @classmethod
    def from_status(cls, item: Mapping[str, Any]) -> Retry | None:
        failed_at, retry_after = parse_time(item.get("lastFailureTime")), parse_time(item.get("retryAfter"))
        if not item.get("operation") or failed_at is None or retry_after is None:
            return None
        return cls(
            str(item["operation"]),
            failed_at,
            retry_after,
            str(item.get("reason") or ""),
            str(item.get("message") or ""),
        )


def _items(status: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = status.get(key)
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


@dataclass
class Memory:
    """The memory of one store, as one pass reads and updates it."""

    pods: dict[str, PodRecord] = field(default_factory=dict)
    retries: dict[str, Retry] = field(default_factory=dict)
    scale_down_refusal: str = ""  # the refusal last announced (an event and the metric per new one)

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Memory:
        pods = [PodRecord.from_status(item) for item in _items(status, POD_HEALTH)]
        retries = [Retry.from_status(item) for item in _items(status, RETRIES)]
        return cls(
            pods={r.name: r for r in pods if r is not None},
            retries={r.operation: r for r in retries if r is not None},
            scale_down_refusal=str(status.get(SCALE_DOWN_REFUSAL) or ""),
        )

    def to_status(self) -> dict[str, Any]:
        """The status fields, in a stable order (the status step writes only what changed)."""
        return {
            POD_HEALTH: [self.pods[name].to_status() for name in sorted(self.pods)],
            RETRIES: [self.retries[op].to_status() for op in sorted(self.retries)],
            SCALE_DOWN_REFUSAL: self.scale_down_refusal,
        }

    # -- pods --------------------------------------------------------------------------------

    def pod(self, name: str, uid: str, restart_count: int) -> PodRecord:
        """The record of this start of the pod: the one kept, or a fresh one if that was about an
        earlier start (or another pod of the same name)."""
        record = self.pods.get(name)
        if record is not None and record.is_for(uid, restart_count):
            return record
        return PodRecord(name, uid, restart_count)

    def keep_pod(self, record: PodRecord) -> None:
        """Remember ``record``; one with nothing to remember is dropped."""
        if record.empty:
            self.pods.pop(record.name, None)
        else:
            self.pods[record.name] = record

    def healthy(self, name: str) -> None:
        """The pod's node does not fail health checks (any more); what else was noticed stays."""
        record = self.pods.get(name)
        if record is not None:
            self.keep_pod(replace(record, failing_since=None))

    def forget_pods_except(self, names: set[str]) -> None:
        """Drop the records of pods that are gone."""
        for name in [n for n in self.pods if n not in names]:
            del self.pods[name]

    # -- retries -----------------------------------------------------------------------------

    def failure(self, operation: str) -> Retry | None:
        """The last failure of ``operation`` still to report, if any."""
        retry = self.retries.get(operation)
        return retry if retry is not None and retry.reason else None

    def may_start(self, operation: str, now: datetime.datetime) -> bool:
        retry = self.retries.get(operation)
        return retry is None or now >= retry.retry_after

    def failed(
        self, operation: str, now: datetime.datetime, backoff: float, reason: str, message: str
    ) -> None:
        after = now + datetime.timedelta(seconds=backoff)
        self.retries[operation] = Retry(operation, now, after, reason, message)

    def succeeded(self, operation: str) -> None:
        self.retries.pop(operation, None)

    def clear_failure(self, operation: str, now: datetime.datetime) -> None:
        """Stop reporting the failure; the wait before a new start stays until it is over."""
        retry = self.retries.get(operation)
        if retry is None:
            return
        if now >= retry.retry_after:
            del self.retries[operation]
        else:
            self.retries[operation] = replace(retry, reason="", message="")

"""Reading pod and node objects: readiness, termination, addresses."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvoperator import constants as c


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def format_time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(body: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


@dataclass(frozen=True)
class PodView:
    name: str
    ordinal: int
    body: Mapping[str, Any]

    @property
    def uid(self) -> str:
        return str(self.body.get("metadata", {}).get("uid", ""))

    @property
    def ip(self) -> str | None:
        ip = (self.body.get("status") or {}).get("podIP")
        return str(ip) if ip else None

    @property
    def node_name(self) -> str | None:
        node = (self.body.get("spec") or {}).get("nodeName")
        return str(node) if node else None

    @property
    def deletion_timestamp(self) -> datetime.datetime | None:
        return parse_time(self.body.get("metadata", {}).get("deletionTimestamp"))

    @property
    def terminating(self) -> bool:
        return self.deletion_timestamp is not None

    @property
    def ready(self) -> bool:
        cond = _condition(self.body, "Ready")
        return bool(cond and cond.get("status") == "True") and not self.terminating

    @property
    def running(self) -> bool:
        """Phase Running and the node container running (as the kubelet reports it)."""
        status = self.body.get("status") or {}
        if status.get("phase") != "Running":
            return False
        for container in status.get("containerStatuses") or []:
            if container.get("name") == c.CONTAINER_NAME:
                return "running" in (container.get("state") or {})
        return False

    @property
    def restart_count(self) -> int:
        """How often the kubelet restarted the node container: with the uid, one start of kvnode."""
        for container in (self.body.get("status") or {}).get("containerStatuses") or []:
            if container.get("name") == c.CONTAINER_NAME:
                return int(container.get("restartCount") or 0)
        return 0


def node_ready(node: Mapping[str, Any] | None) -> bool:
    """Is a cluster node Ready? A node that is gone counts as not Ready."""
    if node is None:
        return False
    cond = _condition(node, "Ready")
    return bool(cond and cond.get("status") == "True")

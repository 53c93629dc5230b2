"""Reading Kubernetes Pod and Node objects: readiness, termination, addresses.

(The kvnode processes in those pods are reached through node_admin.py.)
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvoperator import constants as c
from kvoperator.timestamps import parse_time


def _condition(body: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


@dataclass(frozen=True)
class PodView:
    """One pod of a store's StatefulSet: its ordinal, and what its body says about it."""

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
    def revision(self) -> str | None:
        """The StatefulSet revision the pod was made from (its controller-revision-hash label)."""
        value = ((self.body.get("metadata") or {}).get("labels") or {}).get("controller-revision-hash")
        return str(value) if value else None

    @property
    def peer_port(self) -> int | None:
        """The node's peer port, when its container declares one (a pod of an operator from
        before the peer port has none: its node serves peers on its client port)."""
        for container in (self.body.get("spec") or {}).get("containers") or []:
            for port in container.get("ports") or []:
                if port.get("name") == "peer" and port.get("containerPort"):
                    return int(port["containerPort"])
        return None

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


def cluster_node_ready(node: Mapping[str, Any] | None) -> bool:
    """Is a Kubernetes Node Ready? A Node that is gone counts as not Ready."""
    if node is None:
        return False
    cond = _condition(node, "Ready")
    return bool(cond and cond.get("status") == "True")

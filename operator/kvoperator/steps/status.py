"""Status: phase, conditions, members and replica counts, and what the decisions remember
(memory.py), patched only when something changed. It runs last, after every step had its say."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kvnode.core.membership import MemberState
from kvoperator import kube, memory
from kvoperator.conditions import CONDITION_TYPES, compute_status, status_changed
from kvoperator.passes import Pass

log = logging.getLogger(__name__)


async def run(p: Pass) -> None:
    observed = p.observed
    current = p.operations.current
    if current is not None and not p.report.operation:
        p.report.operation = current.describe()
    status = {**compute_status(observed, p.report, p.ctx.config, p.now), **p.memory.to_status()}
    _warn_once_if_invalid(p)
    if status_changed(observed.status, status):
        updated = await p.ctx.kube.patch(
            kube.KVSTORES, observed.namespace, observed.name, {"status": status}, subresource="status"
        )
        p.report.wrote("status")
        _check_kept(p, updated)
    _gauges(p, status)


def _warn_once_if_invalid(p: Pass) -> None:
    """A spec (or a name) the operator cannot build gets one Warning event, when the status does
    not say so yet: the condition says it for as long as it holds, without an event every pass."""
    observed = p.observed
    if observed.spec is not None:
        return
    conditions = (observed.status or {}).get("conditions") or []
    before: Mapping[str, Any] = next((c for c in conditions if c.get("type") == "Available"), {})
    if before.get("reason") != "InvalidSpec" or before.get("message") != observed.spec_error:
        p.ctx.events.warning(p.store, "InvalidSpec", observed.spec_error)


def _check_kept(p: Pass, updated: dict[str, Any]) -> None:
    """Warn when the API server pruned the memory: its KVStore CRD is older than the operator."""
    dropped = [key for key in memory.FIELDS if key not in (updated.get("status") or {})]
    if dropped:
        log.warning(
            "%s/%s: the API server dropped status.%s: the KVStore CRD predates this operator, so what "
            "its decisions remember is lost at every pass; apply the chart's crds/ (helm upgrade does not)",
            p.observed.namespace,
            p.observed.name,
            ", status.".join(dropped),
        )


def _gauges(p: Pass, status: dict[str, Any]) -> None:
    metrics = p.ctx.metrics
    ns, name = p.observed.namespace, p.observed.name
    metrics.ready_replicas.labels(ns, name).set(status["readyReplicas"])
    metrics.membership_epoch.labels(ns, name).set(status["membershipEpoch"])
    membership = p.observed.membership
    for state in MemberState:
        count = sum(1 for m in membership.members if m.state == state) if membership else 0
        metrics.members.labels(ns, name, state.name.lower()).set(count)
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    for kind in CONDITION_TYPES:
        metrics.condition.labels(ns, name, kind).set(1 if conditions.get(kind) == "True" else 0)

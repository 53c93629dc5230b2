"""Step 9, status: phase, conditions, members and replica counts, patched only when they change."""

from __future__ import annotations

from kvnode.core.membership import MemberState
from kvoperator import kube
from kvoperator.conditions import CONDITION_TYPES, compute_status, status_changed
from kvoperator.reconciler import Pass


async def run(p: Pass) -> None:
    observed = p.observed
    if p.reconciler.operation is not None and not p.report.operation:
        p.report.operation = p.reconciler.operation.describe()
    status = compute_status(observed, p.report, p.ctx.config, p.now)
    if status_changed(observed.status, status):
        await p.ctx.kube.patch(
            kube.KVSTORES, observed.namespace, observed.name, {"status": status}, subresource="status"
        )
        p.report.wrote("status")
    _gauges(p, status)


def _gauges(p: Pass, status: dict[str, object]) -> None:
    metrics = p.ctx.metrics
    ns, name = p.observed.namespace, p.observed.name
    metrics.ready_replicas.labels(ns, name).set(float(str(status["readyReplicas"])))
    metrics.membership_epoch.labels(ns, name).set(float(str(status["membershipEpoch"])))
    membership = p.observed.membership
    for state in MemberState:
        count = sum(1 for m in membership.members if m.state == state) if membership else 0
        metrics.members.labels(ns, name, state.name.lower()).set(count)
    conditions = {c["type"]: c["status"] for c in status["conditions"]}  # type: ignore[attr-defined]
    for kind in CONDITION_TYPES:
        metrics.condition.labels(ns, name, kind).set(1 if conditions.get(kind) == "True" else 0)

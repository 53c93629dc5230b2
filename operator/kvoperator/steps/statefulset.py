"""The StatefulSet: the pod template, and the number of pods the membership allows.

It grows at once when spec.replicas grows (the new pods join one by one in the membership step).
It only shrinks below a pod once that pod is no member any more, re-reading the membership from
the nodes right before it does, and never while a membership change is running.
"""

from __future__ import annotations

from kvoperator import kube, plan
from kvoperator.builders.statefulset import build_statefulset
from kvoperator.children import ensure
from kvoperator.passes import Pass

MANAGED = ["/spec/template", "/spec/updateStrategy", "/spec/persistentVolumeClaimRetentionPolicy"]


async def run(p: Pass) -> None:
    observed = p.observed
    spec = observed.spec
    if spec is None:
        return
    target = observed.target_replicas
    source = observed.restore_source  # its volume stays mounted while spec.restoreFrom is set
    claim = source.claim_name if source is not None and source.claim_name else None
    desired = build_statefulset(p.store, spec, target, p.ctx.config, restore_claim=claim)
    sts = await ensure(p, kube.STATEFULSETS, desired, MANAGED)
    if sts is None:
        return
    observed.statefulset = sts
    current = int((sts.get("spec") or {}).get("replicas", 0))
    if target > current:
        await _scale(p, current, target)
        p.ctx.events.normal(p.store, "ScalingUp", f"StatefulSet grows from {current} to {target} pods")
    elif target < current:
        await _shrink(p, current)
    status = sts.get("status") or {}
    if status.get("updateRevision") and status.get("currentRevision") != status.get("updateRevision"):
        p.report.progress("RollingUpdate", "pods are being updated to the new template")


async def _shrink(p: Pass, current: int) -> None:
    """Shrink only below pods that are certainly no members now: re-read the membership first."""
    if p.operations.busy:
        return
    observed = p.observed
    assert observed.spec is not None
    serving = list(observed.serving_addresses(p.ctx.config).values())
    fresh = await p.observed.nodes.membership(serving)
    if fresh is None:
        return
    target = plan.statefulset_replicas(
        observed.name, observed.spec.replicas, observed.spec.replication_factor, fresh, current
    )
    if target < current:
        await _scale(p, current, target)
        p.ctx.events.normal(
            p.store, "ScaledDown", f"StatefulSet shrinks from {current} to {target} pods (members left first)"
        )


async def _scale(p: Pass, current: int, target: int) -> None:
    observed = p.observed
    sts = await p.ctx.kube.patch(
        kube.STATEFULSETS, observed.namespace, observed.name, {"spec": {"replicas": target}}
    )
    observed.statefulset = sts
    p.report.wrote(f"scaled StatefulSet {current}->{target}")

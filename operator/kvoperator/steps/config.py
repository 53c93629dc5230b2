"""The ConfigMap with the seed peer list: one entry per pod that exists or is about to."""

from __future__ import annotations

from kvoperator import kube
from kvoperator.builders.config import build_configmap
from kvoperator.children import ensure
from kvoperator.passes import Pass


async def run(p: Pass) -> None:
    spec = p.observed.spec
    if spec is None:
        return
    # A new pod must find itself in the list, and a pod still to be removed must stay in it.
    replicas = max(p.observed.target_replicas, p.observed.statefulset_replicas or 0)
    desired = build_configmap(p.store, spec, replicas, p.ctx.config)
    await ensure(p, kube.CONFIGMAPS, desired, ["/data"])

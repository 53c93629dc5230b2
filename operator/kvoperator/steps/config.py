"""Step 1, config: the ConfigMap with the seed peer list (one entry per pod the StatefulSet will have)."""

from __future__ import annotations

from kvoperator import kube
from kvoperator.builders.config import build_configmap
from kvoperator.reconciler import Pass
from kvoperator.steps.children import ensure
from kvoperator.steps.statefulset import target_replicas


async def run(p: Pass) -> None:
    spec = p.observed.spec
    if spec is None:
        return
    # The list covers every pod that exists or is about to: a new pod must find itself in it.
    replicas = max(target_replicas(p), p.observed.statefulset_replicas or 0)
    desired = build_configmap(p.store, spec, replicas, p.ctx.config)
    await ensure(p, kube.CONFIGMAPS, desired, ["/data"])

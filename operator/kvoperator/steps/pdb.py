"""The PodDisruptionBudget: at most maxUnavailable pods evicted at a time (deleted when the spec
turns it off)."""

from __future__ import annotations

from kvoperator import kube, names
from kvoperator.builders.common import is_owned_by
from kvoperator.builders.pdb import build_pdb
from kvoperator.children import ensure
from kvoperator.passes import Pass


async def run(p: Pass) -> None:
    spec = p.observed.spec
    if spec is None:
        return
    if spec.pdb.enabled:
        await ensure(p, kube.PDBS, build_pdb(p.store, spec), ["/spec"])
        return
    existing = await p.ctx.kube.get(kube.PDBS, p.observed.namespace, names.pdb(p.observed.name))
    if existing is not None and is_owned_by(existing, p.observed.uid):
        await p.ctx.kube.delete(kube.PDBS, p.observed.namespace, names.pdb(p.observed.name))
        p.report.wrote("deleted PodDisruptionBudget")
        p.ctx.events.normal(
            p.store, "DeletedPodDisruptionBudget", "spec.podDisruptionBudget.enabled is false"
        )

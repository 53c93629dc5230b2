"""The store's NetworkPolicy (deleted when the spec turns it off)."""

from __future__ import annotations

from kvoperator import kube, names
from kvoperator.builders.common import is_owned_by
from kvoperator.builders.network_policy import build_network_policy
from kvoperator.children import ensure
from kvoperator.passes import Pass


async def run(p: Pass) -> None:
    spec = p.observed.spec
    if spec is None:
        return
    if spec.network_policy.enabled:
        await ensure(p, kube.NETWORK_POLICIES, build_network_policy(p.store, spec, p.ctx.config), ["/spec"])
        return
    name = names.network_policy(p.observed.name)
    existing = await p.ctx.kube.get(kube.NETWORK_POLICIES, p.observed.namespace, name)
    if existing is not None and is_owned_by(existing, p.observed.uid):
        await p.ctx.kube.delete(kube.NETWORK_POLICIES, p.observed.namespace, name)
        p.report.wrote("deleted NetworkPolicy")
        p.ctx.events.normal(p.store, "DeletedNetworkPolicy", "spec.networkPolicy.enabled is false")

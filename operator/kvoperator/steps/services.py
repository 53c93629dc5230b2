"""The headless Service (per-pod DNS for peers) and the client Service."""

from __future__ import annotations

from kvoperator import kube
from kvoperator.builders.services import build_client_service, build_headless_service
from kvoperator.children import ensure
from kvoperator.passes import Pass

MANAGED = ["/spec/selector", "/spec/ports", "/spec/publishNotReadyAddresses", "/spec/type"]


async def run(p: Pass) -> None:
    spec = p.observed.spec
    if spec is None:
        return
    await ensure(p, kube.SERVICES, build_headless_service(p.store, spec), MANAGED)
    await ensure(p, kube.SERVICES, build_client_service(p.store, spec), MANAGED)

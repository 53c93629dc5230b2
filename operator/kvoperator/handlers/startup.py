"""Operator start-up and shut-down: kopf settings, API login, metrics endpoint, and the shared
context and store registry that the other handlers find in kopf's memo."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kvoperator import constants as c
from kvoperator.config import OperatorConfig
from kvoperator.context import OperatorContext
from kvoperator.kube import KubeClient, login
from kvoperator.registry import StoreRegistry

log = logging.getLogger(__name__)


def context(memo: Any) -> OperatorContext:
    """The operator's shared context from kopf's memo."""
    ctx = memo.get("ctx") if hasattr(memo, "get") else None
    if not isinstance(ctx, OperatorContext):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return ctx


def registry(memo: Any) -> StoreRegistry:
    """The reconcilers of the stores, from kopf's memo."""
    registered = memo.get("stores") if hasattr(memo, "get") else None
    if not isinstance(registered, StoreRegistry):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return registered


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf settings for this operator (see docs/operator.md, "Settings")."""
    settings.posting.enabled = True
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = c.MANAGER
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_client_timeout
    settings.watching.connect_timeout = config.connect_timeout
    # The resources are known (the chart installs the CRDs first), so there is nothing to discover
    # at run time: no watching of CRDs or namespaces, and no RBAC for them.
    settings.scanning.disabled = True
    # No handler needs a finalizer (the reconcile loops are the registry's, not kopf daemons), so
    # kopf adds none; naming the one older versions added makes kopf remove it from their stores.
    settings.persistence.finalizer = f"{c.GROUP}/finalizer"
    # Watch only the pods and StatefulSets this operator made: the API server filters (labelSelector
    # on the list and the watch), so a cluster's other pods never reach the operator.
    for group, plural in (("v1", "pods"), ("apps", "statefulsets")):
        settings.watching.label_selectors[group, plural] = f"{c.LABEL_MANAGED_BY}={c.MANAGER}"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=c.GROUP, key="last-handled-configuration"
    )
    if config.peering:
        settings.peering.name = config.peering
        settings.peering.mandatory = True
        settings.peering.standalone = False
    else:
        settings.peering.standalone = True


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    config = memo.get("config")
    if not isinstance(config, OperatorConfig):
        config = OperatorConfig.from_env()
        memo["config"] = config
    configure(settings, config)
    client = KubeClient(login(settings), timeout=config.connect_timeout)
    ctx = OperatorContext.create(config, client)
    if config.metrics_listen:
        ctx.metrics.serve(config.metrics_listen)
        log.info("metrics at http://%s/metrics", config.metrics_listen)
    memo["ctx"] = ctx
    memo["stores"] = StoreRegistry(ctx)
    log.info("kvstore-operator started: members addressed by %s", config.address_mode.value)


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    ctx = memo.get("ctx")
    if not isinstance(ctx, OperatorContext):
        return
    registered = memo.get("stores")
    if isinstance(registered, StoreRegistry):
        await registered.stop_all()
    ctx.metrics.stop()
    await ctx.kube.close()


@kopf.on.probe(id="stores")
def stores(memo: Any, **_: Any) -> int:
    """For the liveness endpoint: how many stores this operator reconciles."""
    registered = memo.get("stores")
    return len(registered) if isinstance(registered, StoreRegistry) else 0

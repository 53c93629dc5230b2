"""KVStore handlers: a daemon per store runs its reconcile loop; create/update/resume wake it."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from kvoperator import constants as c
from kvoperator.handlers.startup import context, registry

RESOURCE = (c.GROUP, c.VERSION, c.KVSTORE_PLURAL)


@kopf.daemon(*RESOURCE, cancellation_timeout=30.0)
async def reconcile(
    name: str, namespace: str | None, memo: Any, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """The store's reconcile loop (reconciler.py), until the store is deleted or the operator stops."""
    assert namespace is not None  # KVStores are namespaced
    stores = registry(memo)
    reconciler = stores.reconciler(namespace, name)

    async def wake_on_stop() -> None:
        await stopped.wait()
        reconciler.wake()

    waker = asyncio.get_running_loop().create_task(wake_on_stop())
    try:
        await reconciler.run(stopped.is_set)
    finally:
        waker.cancel()
        stores.forget(namespace, name)


@kopf.on.create(*RESOURCE)
def created(body: kopf.Body, name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    assert namespace is not None
    context(memo).events.normal(body, "Creating", f"building the objects of store {name}")
    registry(memo).wake(namespace, name)


@kopf.on.update(*RESOURCE, field="spec")
def updated(body: kopf.Body, name: str, namespace: str | None, memo: Any, diff: kopf.Diff, **_: Any) -> None:
    assert namespace is not None
    changes = ", ".join(
        f"{'.'.join(('spec', *(str(f) for f in item.field)))}: {item.old!r} -> {item.new!r}" for item in diff
    )
    context(memo).events.normal(body, "SpecChanged", changes[:900] or "spec changed")
    registry(memo).wake(namespace, name)


@kopf.on.resume(*RESOURCE)
def resumed(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    assert namespace is not None
    registry(memo).wake(namespace, name)


@kopf.on.delete(*RESOURCE)
async def deleted(body: kopf.Body, name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """The finalizer: stop the store's work before its objects go (owner references delete them;
    the StatefulSet's PVC retention policy decides about the volumes)."""
    assert namespace is not None
    ctx = context(memo)
    reconciler = registry(memo).forget(namespace, name)
    if reconciler is not None:
        await reconciler.cancel_operation()
    ctx.metrics.forget_store(namespace, name)
    ctx.events.normal(
        body,
        "Deleting",
        "stopped reconciling; the StatefulSet, Services, ConfigMap and PDB go with the KVStore",
    )

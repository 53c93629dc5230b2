"""KVStore handlers: every event of a store runs or wakes its reconcile loop; create and update
also post an Event."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kvoperator import constants as c
from kvoperator.handlers.startup import context, registry

RESOURCE = (c.GROUP, c.VERSION, c.KVSTORE_PLURAL)
log = logging.getLogger(__name__)


@kopf.on.event(*RESOURCE)
async def store_event(
    type: str | None, body: kopf.Body, name: str, namespace: str | None, memo: Any, **_: Any
) -> None:
    """Any sight of a store starts its reconcile loop (registry.py); its deletion stops it.

    No finalizer: what the operator does when a store goes is only its own bookkeeping (its loop,
    its running operation, its metrics); the children go by owner-reference garbage collection.
    So a store is deleted at once even when the operator is gone or may no longer patch it."""
    assert namespace is not None  # KVStores are namespaced
    stores = registry(memo)
    if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
        if await stores.stop(namespace, name) is not None or type == "DELETED":
            context(memo).metrics.forget_store(namespace, name)
            log.info("%s/%s: deleted; stopped reconciling (its objects go with it)", namespace, name)
        return
    # Only a start: a pass's own status patch is an event too, and waking on it would loop.
    # Spec changes wake the loop through `updated`.
    stores.start(namespace, name)


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

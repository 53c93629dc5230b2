"""Pod and StatefulSet events wake their store's reconciler, so a pass follows each change."""

from __future__ import annotations

from typing import Any

import kopf

from kvoperator import constants as c
from kvoperator.handlers.startup import registry

MANAGED = {c.LABEL_MANAGED_BY: c.MANAGER}


@kopf.on.event("", "v1", "pods", labels=MANAGED)
@kopf.on.event("apps", "v1", "statefulsets", labels=MANAGED)
def child_changed(labels: kopf.Labels, namespace: str | None, memo: Any, **_: Any) -> None:
    store = labels.get(c.LABEL_STORE)
    if store and namespace:
        registry(memo).wake(namespace, store)

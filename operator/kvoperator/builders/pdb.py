"""The PodDisruptionBudget: voluntary evictions take at most ``maxUnavailable`` pods at a time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvoperator import names
from kvoperator.builders.common import Body, child_metadata, stamp_hash
from kvoperator.spec import StoreSpec


def build_pdb(owner: Mapping[str, Any], spec: StoreSpec) -> Body:
    store = owner["metadata"]["name"]
    pdb_spec: Body = {
        "maxUnavailable": spec.pdb.max_unavailable,
        "selector": {"matchLabels": names.selector_labels(store)},
    }
    body: Body = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(owner, names.pdb(store)),
        "spec": pdb_spec,
    }
    return stamp_hash(body, pdb_spec)

"""Metadata shared by every child object: names, labels, owner reference, desired-spec hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from kvoperator import constants as c
from kvoperator import names

Body = dict[str, Any]


def owner_reference(owner: Mapping[str, Any]) -> Body:
    """A controller reference to ``owner`` (a KVStore body): deleting it deletes the child.

    No ``blockOwnerDeletion``: it matters only to foreground deletion, which the operator never
    asks for (it deletes in the background, and the KVStore has no finalizer), and setting it needs
    ``update`` on ``kvstores/finalizers`` wherever the OwnerReferencesPermissionEnforcement
    admission plugin runs (OpenShift and others)."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", c.API_VERSION),
        "kind": owner.get("kind", c.KVSTORE_KIND),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }


def child_metadata(owner: Mapping[str, Any], name: str, component: str = "node") -> Body:
    meta = owner["metadata"]
    return {
        "name": name,
        "namespace": meta["namespace"],
        "labels": names.labels(meta["name"], component),
        "ownerReferences": [owner_reference(owner)],
    }


def spec_hash(part: Any) -> str:
    """A short stable hash of a desired spec; children carry it, so a change is one comparison."""
    text = json.dumps(part, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp_hash(body: Body, part: Any) -> Body:
    body["metadata"].setdefault("annotations", {})[c.ANNOTATION_SPEC_HASH] = spec_hash(part)
    return body


def hash_of(body: Mapping[str, Any] | None) -> str | None:
    if not body:
        return None
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(c.ANNOTATION_SPEC_HASH)
    return str(value) if value is not None else None


def is_owned_by(body: Mapping[str, Any], owner_uid: str) -> bool:
    refs = (body.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid for ref in refs)

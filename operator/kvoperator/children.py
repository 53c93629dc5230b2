"""Create or update one child object of a store, touching it only when its desired-spec hash
differs. The config, services, StatefulSet and PDB steps all keep their object this way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kvoperator import kube
from kvoperator.builders.common import hash_of, is_owned_by
from kvoperator.constants import ANNOTATION_SPEC_HASH
from kvoperator.passes import Pass


def _get(body: dict[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = body
    for part in path.strip("/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


async def ensure(
    p: Pass,
    resource: kube.Resource,
    desired: dict[str, Any],
    managed: Sequence[str],
) -> dict[str, Any] | None:
    """Make the child exist and match ``desired`` at the ``managed`` paths (JSON pointers, replaced
    whole). Returns the object, or None when a same-named object belongs to someone else."""
    client = p.ctx.kube
    meta = desired["metadata"]
    kind = desired["kind"]
    existing = await client.get(resource, meta["namespace"], meta["name"])
    if existing is None:
        try:
            created = await client.create(resource, meta["namespace"], desired)
        except kube.Conflict:  # created since we looked
            return await client.get(resource, meta["namespace"], meta["name"])
        p.report.wrote(f"created {kind} {meta['name']}")
        p.ctx.events.normal(p.store, f"Created{kind}", f"created {kind} {meta['name']}")
        return created
    if not is_owned_by(existing, p.observed.uid):
        p.report.degrade(
            "ForeignObject",
            f"{kind} {meta['name']} exists and is not owned by this KVStore; it is left alone",
        )
        return None
    if hash_of(existing) == hash_of(desired):
        return existing
    ops: list[dict[str, Any]] = []
    for path in managed:
        present, value = _get(desired, path)
        if present:
            ops.append({"op": "add", "path": path, "value": value})
        elif _get(existing, path)[0]:
            ops.append({"op": "remove", "path": path})
    ops.append(
        {
            "op": "add",
            "path": "/metadata/labels",
            "value": {**(existing["metadata"].get("labels") or {}), **meta["labels"]},
        }
    )
    annotations = {**(existing["metadata"].get("annotations") or {}), ANNOTATION_SPEC_HASH: hash_of(desired)}
    ops.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
    updated = await client.patch_json(resource, meta["namespace"], meta["name"], ops)
    p.report.wrote(f"updated {kind} {meta['name']}")
    p.ctx.events.normal(p.store, f"Updated{kind}", f"updated {kind} {meta['name']} to match the spec")
    return updated

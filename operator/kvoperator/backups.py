"""Taking a backup for a KVBackup and verifying it.

A backup is every member's consistent LMDB snapshot (Admin.Backup with one backup id, into the
store's folder on the backup volume), then every snapshot read back by its node (Admin.VerifyBackup:
checksum, restore into a scratch store, key count). Only then is it marked good (verified).
Retention of old scheduled backups is retention.py's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvnode.api.v1 import admin_pb2
from kvnode.core.errors import FailedPrecondition, InvalidArgument, KVError, PermissionDenied
from kvnode.core.names import check_backup_id
from kvoperator import kube
from kvoperator.context import OperatorContext
from kvoperator.folders import backup_location
from kvoperator.node_admin import NodeAdminApi
from kvoperator.observation import Observed, observe
from kvoperator.plan import member_ordinals
from kvoperator.spec import SpecError, StoreSpec, parse_backup_spec, parse_store_spec
from kvoperator.timestamps import format_time, utc_now

TERMINAL = ("Succeeded", "Failed")


class NotReadyForBackup(Exception):
    """The store cannot be backed up right now (retry later)."""


class BackupFailed(Exception):
    """The backup cannot succeed (a permanent failure)."""


# What a node answers when no retry can help until someone changes the setup: a missing bucket,
# credentials the object store refused, a node without the signing key, a folder it cannot write
# or outside its --backup-root. The KVBackup fails at once, saying which, instead of retrying.
REFUSALS = (FailedPrecondition, InvalidArgument, PermissionDenied)


@dataclass(frozen=True)
class Target:
    """A KVBackup and the store it backs up, with the store's backup volume."""

    namespace: str
    name: str  # the KVBackup's
    store: dict[str, Any]  # the KVStore, for its events
    store_name: str
    store_spec: StoreSpec
    claim_name: str

    @property
    def relative(self) -> str:
        """The store's folder in its backup volume, or its bucket's URL."""
        backup = self.store_spec.backup
        if backup is not None and backup.object_store is not None:
            return backup.object_store.url(self.store_name)
        return self.store_spec.backup_dir(self.store_name)


async def run_backup(ctx: OperatorContext, body: Mapping[str, Any]) -> dict[str, Any]:
    """Take and verify the backup a KVBackup asks for; returns its final status. Raises
    NotReadyForBackup to be retried, BackupFailed when it cannot succeed."""
    status = dict(body.get("status") or {})
    if status.get("phase") in TERMINAL:
        return status
    target = await _target(ctx, body)
    observed = await _observe(ctx, target)
    members = _serving_members(observed, ctx)
    backup_id = _backup_id(status, target.name)
    directory = backup_location(ctx.config, target.store_spec, target.store_name)
    started = time.monotonic()
    base = {
        "backupId": backup_id,
        "storeName": target.store_name,
        "claimName": target.claim_name,
        "directory": target.relative,
        "startTime": status.get("startTime") or format_time(utc_now()),
    }
    await _patch(ctx, target, {**base, "phase": "Running", "message": "taking snapshots"})
    await _take_snapshots(observed.nodes, members, directory, backup_id)
    await _patch(ctx, target, {"phase": "Verifying", "message": "verifying the snapshots"})
    nodes, problems = await _verify_snapshots(observed.nodes, members, directory, backup_id)
    duration = time.monotonic() - started
    final = _final_status(base, nodes, problems, duration)
    ctx.metrics.backup_duration.labels(target.namespace, target.store_name).observe(duration)
    if problems:
        await _failed_verification(ctx, body, target, final)
    else:
        await _succeeded(ctx, body, target, final, duration)
    return final


async def fail_backup(ctx: OperatorContext, body: Mapping[str, Any], message: str) -> None:
    """Mark a KVBackup Failed for good."""
    meta = body["metadata"]
    store_name = str((body.get("spec") or {}).get("storeName", ""))
    status = {
        "phase": "Failed",
        "verified": False,
        "message": message,
        "completionTime": format_time(utc_now()),
    }
    await ctx.kube.patch(
        kube.KVBACKUPS, meta["namespace"], meta["name"], {"status": status}, subresource="status"
    )
    ctx.metrics.backups.labels(meta["namespace"], store_name, "failed").inc()
    ctx.events.warning(body, "BackupFailed", message)


async def _target(ctx: OperatorContext, body: Mapping[str, Any]) -> Target:
    """The store the KVBackup names, which must exist, be valid and have a backup volume."""
    meta = body["metadata"]
    try:
        request = parse_backup_spec(body.get("spec"))
    except SpecError as exc:
        raise BackupFailed(str(exc)) from None
    store_name = request.store_name
    store = await ctx.kube.get(kube.KVSTORES, meta["namespace"], store_name)
    if store is None:
        raise BackupFailed(f"KVStore {store_name} does not exist")
    try:
        store_spec = parse_store_spec(store.get("spec"))
    except SpecError as exc:
        raise BackupFailed(f"KVStore {store_name} has an invalid spec: {exc}") from None
    if store_spec.backup is None:
        raise BackupFailed(f"KVStore {store_name} has no spec.backup (no backup volume nor bucket)")
    return Target(
        meta["namespace"], meta["name"], store, store_name, store_spec, store_spec.backup.claim_name
    )


async def _observe(ctx: OperatorContext, target: Target) -> Observed:
    observed = await observe(ctx.kube, ctx.admin, ctx.config, target.namespace, target.store_name)
    if observed is None:
        raise BackupFailed(f"KVStore {target.store_name} does not exist")
    return observed


def _serving_members(observed: Observed, ctx: OperatorContext) -> dict[str, str]:
    """member id -> address, requiring every member to serve."""
    membership = observed.membership
    if membership is None or membership.epoch == 0:
        raise NotReadyForBackup("the store's membership is not bootstrapped yet")
    serving = observed.serving_addresses(ctx.config)
    ordinals = member_ordinals(observed.name, membership)
    missing = sorted(m.id for m in membership.members if ordinals.get(m.id, -1) not in serving)
    if missing:
        raise NotReadyForBackup(f"members not serving: {', '.join(missing)}")
    return {member_id: serving[ordinal] for member_id, ordinal in ordinals.items()}


def _backup_id(status: Mapping[str, Any], name: str) -> str:
    """The backup's id: the KVBackup's name (kept in its status once taken)."""
    backup_id = str(status.get("backupId") or name)
    try:
        check_backup_id(backup_id)
    except KVError as exc:
        raise BackupFailed(f"the KVBackup's name cannot be a backup id: {exc}") from None
    return backup_id


async def _patch(ctx: OperatorContext, target: Target, status: dict[str, Any]) -> None:
    await ctx.kube.patch(
        kube.KVBACKUPS, target.namespace, target.name, {"status": status}, subresource="status"
    )


async def _take_snapshots(
    admin: NodeAdminApi, members: dict[str, str], directory: str, backup_id: str
) -> None:
    """Every member's snapshot at once; a failed one is retried with the whole backup, unless the
    node refused it for a reason no retry changes."""
    snapshots = await asyncio.gather(
        *(admin.backup(address, directory, backup_id) for address in members.values()),
        return_exceptions=True,
    )
    refused = [f"{m}: {s}" for m, s in zip(members, snapshots, strict=True) if isinstance(s, REFUSALS)]
    if refused:
        raise BackupFailed("snapshot refused on " + "; ".join(refused))
    errors = [f"{m}: {s}" for m, s in zip(members, snapshots, strict=True) if isinstance(s, BaseException)]
    if errors:
        raise NotReadyForBackup("snapshot failed on " + "; ".join(errors))


async def _verify_snapshots(
    admin: NodeAdminApi, members: dict[str, str], directory: str, backup_id: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each member reads its own snapshot back: the nodes' manifests (by name), and the problems."""
    verdicts = await asyncio.gather(
        *(admin.verify(address, directory, backup_id, node_id=member) for member, address in members.items()),
        return_exceptions=True,
    )
    problems: list[str] = []
    nodes: list[dict[str, Any]] = []
    for member, verdict in zip(members, verdicts, strict=True):
        if isinstance(verdict, BaseException):
            problems.append(f"{member}: verification failed: {verdict}")
            continue
        problems += list(verdict.problems)
        if not verdict.ok and not verdict.problems:
            problems.append(f"{member}: verification failed")
        nodes += [_node_status(m) for m in verdict.manifests]
    return sorted(nodes, key=lambda n: n["name"]), problems


def _final_status(
    base: dict[str, Any], nodes: list[dict[str, Any]], problems: list[str], duration: float
) -> dict[str, Any]:
    return {
        **base,
        "nodes": nodes,
        "keys": max((n["keys"] for n in nodes), default=0),  # the largest node snapshot's live keys
        "completionTime": format_time(utc_now()),
        "durationSeconds": round(duration, 3),
        "verified": not problems,
        "problems": problems,
    }


def _node_status(manifest: admin_pb2.BackupManifest) -> dict[str, Any]:
    return {
        "name": manifest.node_id,
        "keys": int(manifest.keys),
        "tombstones": int(manifest.tombstones),
        "sha256": manifest.sha256,
        "sizeBytes": int(manifest.size_bytes),
        "epoch": int(manifest.epoch),
    }


async def _failed_verification(
    ctx: OperatorContext, body: Mapping[str, Any], target: Target, final: dict[str, Any]
) -> None:
    problems = final["problems"]
    final.update(phase="Failed", message=f"verification found {len(problems)} problems")
    await _patch(ctx, target, final)
    ctx.metrics.backups.labels(target.namespace, target.store_name, "failed").inc()
    ctx.events.warning(body, "BackupFailed", "; ".join(problems)[:900])
    ctx.events.warning(target.store, "BackupFailed", f"backup {final['backupId']} failed verification")


async def _succeeded(
    ctx: OperatorContext, body: Mapping[str, Any], target: Target, final: dict[str, Any], duration: float
) -> None:
    """Mark the KVBackup good and record it as the store's last backup."""
    count = len(final["nodes"])
    size = sum(n["sizeBytes"] for n in final["nodes"])
    final.update(phase="Succeeded", message=f"{count} snapshots taken and verified")
    backup = target.store_spec.backup
    kind = "bucket" if backup is not None and backup.object_store is not None else "volume"
    ctx.metrics.backup_bytes.labels(target.namespace, target.store_name, kind).inc(size)
    await _patch(ctx, target, final)
    ctx.metrics.backups.labels(target.namespace, target.store_name, "succeeded").inc()
    ctx.metrics.last_backup.labels(target.namespace, target.store_name).set(time.time())
    last = {
        "name": target.name,
        "backupId": final["backupId"],
        "time": final["completionTime"],
        "keys": final["keys"],
        "verified": True,
    }
    await ctx.kube.patch(
        kube.KVSTORES,
        target.namespace,
        target.store_name,
        {"status": {"lastBackup": last}},
        subresource="status",
    )
    ctx.events.normal(
        body,
        "BackupSucceeded",
        f"{count} snapshots ({size} bytes) to {target.relative} verified in {duration:.1f}s",
    )
    ctx.events.normal(
        target.store, "BackupSucceeded", f"backup {final['backupId']}: {count} snapshots verified"
    )

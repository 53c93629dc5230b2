"""Taking a backup for a KVBackup, verifying it, and pruning old scheduled ones.

A backup is every member's consistent LMDB snapshot (Admin.Backup with one backup id, into the
store's folder on the backup volume), then every snapshot read back by its node (Admin.VerifyBackup:
checksum, restore into a scratch store, key count). Only then is it marked good (verified).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from kvnode.core.errors import KVError
from kvnode.core.names import check_backup_id
from kvoperator import constants as c
from kvoperator import kube
from kvoperator.context import OperatorContext
from kvoperator.plan import member_ordinals
from kvoperator.pods import format_time, parse_time
from kvoperator.spec import BackupSpec, SpecError, parse_backup_spec, parse_store_spec
from kvoperator.state import Observed, observe

log = logging.getLogger(__name__)
TERMINAL = ("Succeeded", "Failed")


class NotReadyForBackup(Exception):
    """The store cannot be backed up right now (retry later)."""


class BackupFailed(Exception):
    """The backup cannot succeed (a permanent failure)."""


def backup_directory(ctx: OperatorContext, relative: str) -> str:
    return f"{ctx.config.backup_path.rstrip('/')}/{relative}" if relative else ctx.config.backup_path


async def _patch_backup(ctx: OperatorContext, namespace: str, name: str, status: dict[str, Any]) -> None:
    await ctx.kube.patch(kube.KVBACKUPS, namespace, name, {"status": status}, subresource="status")


def _members(observed: Observed, ctx: OperatorContext) -> dict[str, str]:
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


async def run_backup(ctx: OperatorContext, body: Mapping[str, Any]) -> dict[str, Any]:
    """Take and verify the backup a KVBackup asks for; returns its final status. Raises
    NotReadyForBackup to be retried, BackupFailed when it cannot succeed."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    status = dict(body.get("status") or {})
    if status.get("phase") in TERMINAL:
        return status
    try:
        request = parse_backup_spec(body.get("spec"))
    except SpecError as exc:
        raise BackupFailed(str(exc)) from None
    store = await ctx.kube.get(kube.KVSTORES, namespace, request.store_name)
    if store is None:
        raise BackupFailed(f"KVStore {request.store_name} does not exist")
    try:
        store_spec = parse_store_spec(store.get("spec"))
    except SpecError as exc:
        raise BackupFailed(f"KVStore {request.store_name} has an invalid spec: {exc}") from None
    if store_spec.backup is None:
        raise BackupFailed(f"KVStore {request.store_name} has no spec.backup (no backup volume)")
    observed = await observe(ctx.kube, ctx.admin, ctx.config, namespace, request.store_name)
    if observed is None:
        raise BackupFailed(f"KVStore {request.store_name} does not exist")
    members = _members(observed, ctx)
    relative = store_spec.backup_dir(request.store_name)
    directory = backup_directory(ctx, relative)
    backup_id = str(status.get("backupId") or name)
    try:
        check_backup_id(backup_id)
    except KVError as exc:
        raise BackupFailed(f"the KVBackup's name cannot be a backup id: {exc}") from None
    started = time.monotonic()
    base = {
        "backupId": backup_id,
        "storeName": request.store_name,
        "claimName": store_spec.backup.claim_name,
        "directory": relative,
        "startTime": status.get("startTime") or format_time(datetime.datetime.now(datetime.UTC)),
    }
    await _patch_backup(ctx, namespace, name, {**base, "phase": "Running", "message": "taking snapshots"})
    snapshots = await asyncio.gather(
        *(ctx.admin.backup(address, directory, backup_id) for address in members.values()),
        return_exceptions=True,
    )
    errors = [f"{m}: {s}" for m, s in zip(members, snapshots, strict=True) if isinstance(s, BaseException)]
    if errors:
        raise NotReadyForBackup("snapshot failed on " + "; ".join(errors))
    await _patch_backup(ctx, namespace, name, {"phase": "Verifying", "message": "verifying the snapshots"})
    verdicts = await asyncio.gather(
        *(
            ctx.admin.verify(address, directory, backup_id, node_id=member)
            for member, address in members.items()
        ),
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
        for m in verdict.manifests:
            nodes.append(
                {
                    "name": m.node_id,
                    "keys": int(m.keys),
                    "tombstones": int(m.tombstones),
                    "sha256": m.sha256,
                    "sizeBytes": int(m.size_bytes),
                    "epoch": int(m.epoch),
                }
            )
    duration = time.monotonic() - started
    final: dict[str, Any] = {
        **base,
        "nodes": sorted(nodes, key=lambda n: n["name"]),
        "keys": max((n["keys"] for n in nodes), default=0),
        "completionTime": format_time(datetime.datetime.now(datetime.UTC)),
        "durationSeconds": round(duration, 3),
        "verified": not problems,
        "problems": problems,
    }
    metrics = ctx.metrics
    metrics.backup_duration.labels(namespace, request.store_name).observe(duration)
    if problems:
        final.update(phase="Failed", message=f"verification found {len(problems)} problems")
        await _patch_backup(ctx, namespace, name, final)
        metrics.backups.labels(namespace, request.store_name, "failed").inc()
        ctx.events.warning(body, "BackupFailed", "; ".join(problems)[:900])
        ctx.events.warning(store, "BackupFailed", f"backup {backup_id} failed verification")
        return final
    final.update(phase="Succeeded", message=f"{len(nodes)} snapshots taken and verified")
    await _patch_backup(ctx, namespace, name, final)
    metrics.backups.labels(namespace, request.store_name, "succeeded").inc()
    metrics.last_backup.labels(namespace, request.store_name).set(time.time())
    last = {
        "name": name,
        "backupId": backup_id,
        "time": final["completionTime"],
        "keys": final["keys"],
        "verified": True,
    }
    await ctx.kube.patch(
        kube.KVSTORES, namespace, request.store_name, {"status": {"lastBackup": last}}, subresource="status"
    )
    ctx.events.normal(body, "BackupSucceeded", f"{len(nodes)} snapshots verified in {duration:.1f}s")
    ctx.events.normal(store, "BackupSucceeded", f"backup {backup_id}: {len(nodes)} snapshots verified")
    return final


async def fail_backup(ctx: OperatorContext, body: Mapping[str, Any], message: str) -> None:
    meta = body["metadata"]
    store_name = str((body.get("spec") or {}).get("storeName", ""))
    await _patch_backup(
        ctx,
        meta["namespace"],
        meta["name"],
        {
            "phase": "Failed",
            "verified": False,
            "message": message,
            "completionTime": format_time(datetime.datetime.now(datetime.UTC)),
        },
    )
    ctx.metrics.backups.labels(meta["namespace"], store_name, "failed").inc()
    ctx.events.warning(body, "BackupFailed", message)


def _created(body: Mapping[str, Any]) -> datetime.datetime:
    stamp = parse_time((body.get("metadata") or {}).get("creationTimestamp"))
    return stamp or datetime.datetime.fromtimestamp(0, datetime.UTC)


def scheduled_pattern(store: str) -> re.Pattern[str]:
    return re.compile(re.escape(store) + r"-\d{8}-\d{6}")


async def prune(ctx: OperatorContext, observed: Observed, backup: BackupSpec, address: str) -> list[str]:
    """Retention: keep the newest ``keep`` verified scheduled backups; delete older scheduled ones
    (their data through Admin.DeleteBackup, then their KVBackup). Backups taken on demand are the
    user's to delete. Returns the deleted backup ids."""
    namespace, store = observed.namespace, observed.name
    objects = [
        b
        for b in await ctx.kube.list_objects(
            kube.KVBACKUPS, namespace, {c.LABEL_STORE: store, c.LABEL_SCHEDULED: "true"}
        )
        if (b.get("spec") or {}).get("storeName") == store
    ]
    objects.sort(key=_created, reverse=True)
    good = [b for b in objects if (b.get("status") or {}).get("phase") == "Succeeded"]
    kept = good[: backup.keep]
    if len(kept) < backup.keep:
        return []
    oldest_kept = _created(kept[-1])
    doomed = [
        b
        for b in objects
        if b not in kept
        and _created(b) <= oldest_kept
        and (b.get("status") or {}).get("phase") in ("Succeeded", "Failed")
    ]
    if not doomed:
        return []
    directory = backup_directory(ctx, observed.spec.backup_dir(store) if observed.spec else store)
    present = {s.backup_id: s for s in await ctx.admin.list_backups(address, directory)}
    kept_ids = {str((b.get("status") or {}).get("backupId") or b["metadata"]["name"]) for b in kept}
    known_ids = {str((b.get("status") or {}).get("backupId") or b["metadata"]["name"]) for b in objects}
    pattern = scheduled_pattern(store)
    deleted: list[str] = []
    for b in doomed:
        backup_id = str((b.get("status") or {}).get("backupId") or b["metadata"]["name"])
        if backup_id in present:
            await ctx.admin.delete_backup(address, directory, backup_id)
        await ctx.kube.delete(kube.KVBACKUPS, namespace, b["metadata"]["name"])
        deleted.append(backup_id)
    # Scheduled snapshots whose KVBackup is gone (deleted by hand), older than what is kept.
    oldest_kept_unix = oldest_kept.timestamp()
    for backup_id, summary in present.items():
        if (
            pattern.fullmatch(backup_id)
            and backup_id not in known_ids
            and backup_id not in kept_ids
            and summary.created_unix < oldest_kept_unix
        ):
            try:
                await ctx.admin.delete_backup(address, directory, backup_id)
            except KVError:
                continue
            deleted.append(backup_id)
    return deleted

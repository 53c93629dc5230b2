"""Retention of scheduled backups: keep the newest verified ones, delete the older ones.

Backups taken on demand are the user's to delete; only scheduled ones (labelled, named
``<store>-<yyyymmdd-hhmmss>``) are pruned, their data through Admin.DeleteBackup and then their
KVBackup.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

from kvnode.core.errors import KVError
from kvoperator import constants as c
from kvoperator import kube
from kvoperator.context import OperatorContext
from kvoperator.folders import backup_directory, backup_location
from kvoperator.observation import Observed
from kvoperator.spec import BackupSpec
from kvoperator.timestamps import parse_time


def _created(body: Mapping[str, Any]) -> datetime.datetime:
    stamp = parse_time((body.get("metadata") or {}).get("creationTimestamp"))
    return stamp or datetime.datetime.fromtimestamp(0, datetime.UTC)


def _backup_id(body: Mapping[str, Any]) -> str:
    return str((body.get("status") or {}).get("backupId") or body["metadata"]["name"])


def _phase(body: Mapping[str, Any]) -> object:
    return (body.get("status") or {}).get("phase")


def scheduled_pattern(store: str) -> re.Pattern[str]:
    return re.compile(re.escape(store) + r"-\d{8}-\d{6}")


async def prune(ctx: OperatorContext, observed: Observed, backup: BackupSpec, address: str) -> list[str]:
    """Keep the newest ``keep`` verified scheduled backups; delete older scheduled ones (their data
    through ``address``, then their KVBackup). Returns the deleted backup ids."""
    namespace, store = observed.namespace, observed.name
    objects = [
        b
        for b in await ctx.kube.list_objects(
            kube.KVBACKUPS, namespace, {c.LABEL_STORE: store, c.LABEL_SCHEDULED: "true"}
        )
        if (b.get("spec") or {}).get("storeName") == store
    ]
    objects.sort(key=_created, reverse=True)
    kept = [b for b in objects if _phase(b) == "Succeeded"][: backup.keep]
    if len(kept) < backup.keep:
        return []
    oldest_kept = _created(kept[-1])
    doomed = [
        b
        for b in objects
        if b not in kept and _created(b) <= oldest_kept and _phase(b) in ("Succeeded", "Failed")
    ]
    if not doomed:
        return []
    spec = observed.spec
    directory = backup_location(ctx.config, spec, store) if spec else backup_directory(ctx.config, store)
    present = {s.backup_id: s for s in await observed.nodes.list_backups(address, directory)}
    deleted: list[str] = []
    for b in doomed:
        backup_id = _backup_id(b)
        if backup_id in present:
            await observed.nodes.delete_backup(address, directory, backup_id)
        await ctx.kube.delete(kube.KVBACKUPS, namespace, b["metadata"]["name"])
        deleted.append(backup_id)
    # Scheduled snapshots whose KVBackup is gone (deleted by hand), older than what is kept.
    known_ids = {_backup_id(b) for b in objects}  # the kept ones among them
    pattern = scheduled_pattern(store)
    for backup_id, summary in present.items():
        if (
            pattern.fullmatch(backup_id)
            and backup_id not in known_ids
            and summary.created_unix < oldest_kept.timestamp()
        ):
            try:
                await observed.nodes.delete_backup(address, directory, backup_id)
            except KVError:
                continue
            deleted.append(backup_id)
    return deleted

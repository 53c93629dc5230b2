"""Scheduled backups: create a KVBackup when the schedule is due, and apply retention.

The backup itself runs in the KVBackup handler (handlers/kvbackup.py), the same way for scheduled
and on-demand backups. Runs missed while the operator was away collapse into one.
"""

from __future__ import annotations

import datetime

from kvoperator import kube
from kvoperator.builders.backup import build_scheduled_backup
from kvoperator.cron import ScheduleError, parse_schedule
from kvoperator.passes import Pass
from kvoperator.retention import prune
from kvoperator.spec import BackupSpec
from kvoperator.timestamps import format_time, parse_time


async def run(p: Pass) -> None:
    observed = p.observed
    spec = observed.spec
    if spec is None or spec.backup is None:
        return
    membership = observed.membership
    if membership is None or membership.epoch == 0:
        return
    backup = spec.backup
    interval = p.ctx.metrics.backup_interval.labels(observed.namespace, observed.name)
    interval.set(0)  # no schedule (or a suspended one): the overdue alert stays quiet
    if backup.schedule and not backup.suspend:
        try:
            schedule = parse_schedule(backup.schedule)
        except ScheduleError as exc:
            p.report.degrade("InvalidSchedule", str(exc))
            return
        following = schedule.next_after(p.now)
        interval.set((schedule.next_after(following) - following).total_seconds())
        state = observed.status.get("backup") or {}
        since = parse_time(state.get("lastScheduleTime")) or parse_time(
            observed.store["metadata"].get("creationTimestamp")
        )
        due = schedule.last_due(since or p.now, p.now)
        if due is not None:
            await _schedule(p, backup, due)
    await _retention(p, backup)


async def _schedule(p: Pass, backup: BackupSpec, due: datetime.datetime) -> None:
    """Create the KVBackup of the run due at ``due``, and record the run."""
    observed = p.observed
    body = build_scheduled_backup(p.store, due)
    name = body["metadata"]["name"]
    try:
        await p.ctx.kube.create(kube.KVBACKUPS, observed.namespace, body)
        p.report.wrote(f"created KVBackup {name}")
        p.ctx.events.normal(p.store, "BackupScheduled", f"KVBackup {name} (schedule {backup.schedule!r})")
    except kube.Conflict:
        pass  # created by an earlier pass that did not get to record it
    recorded = {"lastScheduleTime": format_time(due), "lastScheduledBackup": name}
    await p.ctx.kube.patch(
        kube.KVSTORES,
        observed.namespace,
        observed.name,
        {"status": {"backup": recorded}},
        subresource="status",
    )


async def _retention(p: Pass, backup: BackupSpec) -> None:
    observed = p.observed
    serving = observed.serving_addresses(p.ctx.config)
    if not serving:
        return
    for backup_id in await prune(p.ctx, observed, backup, serving[min(serving)]):
        p.report.wrote(f"pruned backup {backup_id}")
        p.ctx.metrics.backups_pruned.labels(observed.namespace, observed.name).inc()
        p.ctx.events.normal(
            p.store, "BackupPruned", f"backup {backup_id} deleted by retention (keep {backup.keep})"
        )

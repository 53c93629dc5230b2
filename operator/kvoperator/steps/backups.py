"""Step 7, backups: create a KVBackup when the schedule is due, and apply retention.

The backup itself runs in the KVBackup handler (handlers/kvbackup.py), the same way for scheduled
and on-demand backups. Runs missed while the operator was away collapse into one.
"""

from __future__ import annotations

from kvoperator import kube
from kvoperator.backups import prune
from kvoperator.builders.backup import build_scheduled_backup
from kvoperator.cron import ScheduleError, parse_schedule
from kvoperator.pods import format_time, parse_time
from kvoperator.reconciler import Pass


async def run(p: Pass) -> None:
    observed = p.observed
    spec = observed.spec
    if spec is None or spec.backup is None:
        return
    membership = observed.membership
    if membership is None or membership.epoch == 0:
        return
    backup = spec.backup
    if backup.schedule and not backup.suspend:
        try:
            schedule = parse_schedule(backup.schedule)
        except ScheduleError as exc:
            p.report.degrade("InvalidSchedule", str(exc))
            return
        state = observed.status.get("backup") or {}
        since = parse_time(state.get("lastScheduleTime")) or parse_time(
            observed.store["metadata"].get("creationTimestamp")
        )
        if since is None:
            since = p.now
        due = schedule.last_due(since, p.now)
        if due is not None:
            body = build_scheduled_backup(p.store, due)
            try:
                await p.ctx.kube.create(kube.KVBACKUPS, observed.namespace, body)
                p.report.wrote(f"created KVBackup {body['metadata']['name']}")
                p.ctx.events.normal(
                    p.store,
                    "BackupScheduled",
                    f"KVBackup {body['metadata']['name']} (schedule {backup.schedule!r})",
                )
            except kube.Conflict:
                pass  # created by an earlier pass that did not get to record it
            await p.ctx.kube.patch(
                kube.KVSTORES,
                observed.namespace,
                observed.name,
                {
                    "status": {
                        "backup": {
                            "lastScheduleTime": format_time(due),
                            "lastScheduledBackup": body["metadata"]["name"],
                        }
                    }
                },
                subresource="status",
            )
    serving = observed.serving_addresses(p.ctx.config)
    if not serving:
        return
    deleted = await prune(p.ctx, observed, backup, serving[min(serving)])
    for backup_id in deleted:
        p.report.wrote(f"pruned backup {backup_id}")
        p.ctx.metrics.backups_pruned.labels(observed.namespace, observed.name).inc()
        p.ctx.events.normal(
            p.store, "BackupPruned", f"backup {backup_id} deleted by retention (keep {backup.keep})"
        )

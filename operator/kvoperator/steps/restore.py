"""Step 6, restore: replay ``spec.restoreFrom`` into a new store once, when its cluster is up.

The backup's records go through the cluster's ordinary write path (Admin.Restore on one node) with
their original versions, so a backup restores into a store of any size. Until it is done the store
reports phase Restoring and Available=False.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kvnode.core.membership import MemberState
from kvoperator import kube
from kvoperator.plan import member_ordinals
from kvoperator.pods import format_time
from kvoperator.reconciler import Operation, Pass

FAILURE_BACKOFF = 10.0


@dataclass(frozen=True)
class RestoreSource:
    backup_id: str
    claim_name: str
    path: str  # the backup's folder inside its volume


async def resolve_source(p: Pass) -> tuple[RestoreSource | None, str]:
    """The backup that spec.restoreFrom names, or None and why not."""
    spec = p.observed.spec
    if spec is None or spec.restore_from is None:
        return None, "no restoreFrom"
    source = spec.restore_from
    if source.backup_id:
        return RestoreSource(source.backup_id, source.claim_name, source.path.strip("/")), ""
    backup = await p.ctx.kube.get(kube.KVBACKUPS, p.observed.namespace, source.backup_name)
    if backup is None:
        return None, f"KVBackup {source.backup_name} does not exist"
    status = backup.get("status") or {}
    if status.get("phase") != "Succeeded" or not status.get("verified"):
        phase = status.get("phase", "Pending")
        return None, f"KVBackup {source.backup_name} is not a verified backup (phase {phase})"
    return (
        RestoreSource(
            str(status["backupId"]),
            source.claim_name or str(status.get("claimName", "")),
            source.path.strip("/") or str(status.get("directory", "")).strip("/"),
        ),
        "",
    )


async def restore_claim(p: Pass) -> str | None:
    """The claim the pods must mount for the restore (None when nothing is to be restored)."""
    spec = p.observed.spec
    if spec is None or spec.restore_from is None:
        return None
    source, _ = await resolve_source(p)
    return source.claim_name if source and source.claim_name else None


def restore_directory(p: Pass, source: RestoreSource) -> str:
    """Where the nodes see the backup's folder: in the store's own backup volume if it is the same
    claim, else in the read-only restore mount."""
    spec = p.observed.spec
    config = p.ctx.config
    if spec is not None and spec.backup is not None and spec.backup.claim_name == source.claim_name:
        root = config.backup_path
    else:
        root = config.restore_path
    return f"{root.rstrip('/')}/{source.path}" if source.path else root


async def run(p: Pass) -> None:
    observed = p.observed
    spec = observed.spec
    if spec is None or spec.restore_from is None:
        return
    done = (observed.status.get("restore") or {}).get("phase") == "Succeeded"
    reconciler = p.reconciler
    op = reconciler.operation
    if op is not None and op.kind == "restore":
        if not op.task.done():
            p.report.restore_pending = True
            p.report.operation = op.describe()
            p.report.progress("Restoring", op.describe())
            return
        finished = reconciler.collect_operation()
        if finished is not None and finished[1] is not None:
            reconciler.retry_after = time.monotonic() + FAILURE_BACKOFF
        return  # the operation wrote the outcome to status; the next pass reads it
    if done:
        return
    p.report.restore_pending = True
    previous = observed.status.get("restore") or {}
    if previous.get("phase") == "Failed":
        p.report.degrade("RestoreFailed", str(previous.get("message", "")))
    membership = observed.membership
    serving = observed.serving_addresses(p.ctx.config)
    if membership is None or membership.epoch == 0 or membership.in_transition:
        p.report.progress("Restoring", "the restore waits for the membership to settle")
        return
    if reconciler.operation is not None or time.monotonic() < reconciler.retry_after:
        p.report.progress("Restoring", "the restore waits for the store's current operation")
        return
    ordinals = member_ordinals(observed.name, membership)
    if (
        len(ordinals) < len(membership.members)
        or any(m.state != MemberState.ACTIVE for m in membership.members)
        or any(o not in serving for o in ordinals.values())
    ):
        p.report.progress("Restoring", "the restore waits for every member to serve")
        return
    source, why = await resolve_source(p)
    if source is None:
        p.report.degrade("RestoreSourceMissing", why)
        return
    address = serving[min(ordinals.values())]
    directory = restore_directory(p, source)
    reconciler.start_operation(
        "restore", "Restoring", f"restoring backup {source.backup_id}", _work(p, source, address, directory)
    )
    p.report.progress("Restoring", f"restoring backup {source.backup_id}")


def _work(
    p: Pass, source: RestoreSource, address: str, directory: str
) -> Callable[[Operation], Awaitable[None]]:
    ctx = p.ctx
    store = p.store
    namespace, name = p.observed.namespace, p.observed.name

    async def patch(restore: dict[str, Any]) -> None:
        await ctx.kube.patch(
            kube.KVSTORES, namespace, name, {"status": {"restore": restore}}, subresource="status"
        )

    async def work(op: Operation) -> None:
        base = {"backupId": source.backup_id, "directory": directory}
        await patch({**base, "phase": "Running", "startTime": format_time(p.now), "message": ""})
        ctx.events.normal(store, "RestoreStarted", f"replaying backup {source.backup_id} from {directory}")
        try:
            reply = await ctx.admin.restore(address, directory, source.backup_id)
        except Exception as exc:
            await patch({**base, "phase": "Failed", "message": str(exc)})
            ctx.events.warning(
                store, "RestoreFailed", f"backup {source.backup_id}: {exc}; it will be retried"
            )
            ctx.metrics.restores.labels(namespace, name, "failed").inc()
            raise
        await patch(
            {
                **base,
                "phase": "Succeeded",
                "keys": int(reply.keys),
                "records": int(reply.records),
                "completionTime": format_time(datetime.datetime.now(datetime.UTC)),
                "message": f"replayed {reply.records} records ({reply.keys} live keys)",
            }
        )
        ctx.events.normal(
            store, "Restored", f"backup {source.backup_id}: {reply.records} records, {reply.keys} live keys"
        )
        ctx.metrics.restores.labels(namespace, name, "succeeded").inc()

    return work

"""Restore: replay ``spec.restoreFrom`` into a new store once, when its cluster is up.

The backup's records go through the cluster's ordinary write path (Admin.Restore on one node) with
their original versions, so a backup restores into a store of any size. Until it is done the store
reports phase Restoring and Available=False. The backup is the one the observation resolved. A
failed restore is retried after a back-off of its own (``retries``, operation ``restore``), so it
never holds up a membership change.
"""

from __future__ import annotations

from typing import Any

from kvnode.core.membership import MemberState
from kvoperator import kube
from kvoperator.folders import restore_directory
from kvoperator.operation import Operation, Work
from kvoperator.passes import Pass
from kvoperator.plan import member_ordinals
from kvoperator.restore_source import RestoreSource
from kvoperator.timestamps import format_time, utc_now

OPERATION = "restore"
FAILURE_BACKOFF = 10.0


async def run(p: Pass) -> None:
    observed = p.observed
    spec = observed.spec
    if spec is None or spec.restore_from is None:
        return
    op = p.operations.current
    if op is not None and op.kind == OPERATION:
        _follow(p, op)
        return
    if (observed.status.get("restore") or {}).get("phase") == "Succeeded":
        return
    p.report.restore_pending = True
    previous = observed.status.get("restore") or {}
    if previous.get("phase") == "Failed":
        p.report.degrade("RestoreFailed", str(previous.get("message", "")))
    address = _restoring_member(p)
    if address is None:
        return
    source = observed.restore_source
    if source is None:
        p.report.degrade("RestoreSourceMissing", observed.restore_missing)
        return
    directory = restore_directory(spec, p.ctx.config, source)
    description = f"restoring backup {source.backup_id}"
    p.operations.start(OPERATION, "Restoring", description, _work(p, source, address, directory))
    p.report.progress("Restoring", description)


def _follow(p: Pass, op: Operation) -> None:
    """Report the running restore, or collect the finished one (it wrote its outcome to the status;
    the next pass reads it there)."""
    if not op.task.done():
        p.report.restore_pending = True
        p.report.operation = op.describe()
        p.report.progress("Restoring", op.describe())
        return
    finished = p.operations.collect(OPERATION)
    if finished is None:
        return
    error = finished[1]
    if error is None:
        p.memory.succeeded(OPERATION)
    else:
        p.memory.failed(OPERATION, p.now, FAILURE_BACKOFF, "RestoreFailed", str(error))


def _restoring_member(p: Pass) -> str | None:
    """The member to run the restore on, once the membership is settled, every member is active
    and serves, and nothing else runs; None (with the reason reported) until then."""
    observed = p.observed
    membership = observed.membership
    if membership is None or membership.epoch == 0 or membership.in_transition:
        p.report.progress("Restoring", "the restore waits for the membership to settle")
        return None
    if p.operations.current is not None or not p.memory.may_start(OPERATION, p.now):
        p.report.progress("Restoring", "the restore waits for the store's current operation")
        return None
    serving = observed.serving_addresses(p.ctx.config)
    ordinals = member_ordinals(observed.name, membership)
    if (
        len(ordinals) < len(membership.members)
        or any(m.state != MemberState.ACTIVE for m in membership.members)
        or any(o not in serving for o in ordinals.values())
    ):
        p.report.progress("Restoring", "the restore waits for every member to serve")
        return None
    return serving[min(ordinals.values())]


def _work(p: Pass, source: RestoreSource, address: str, directory: str) -> Work:
    ctx, nodes = p.ctx, p.observed.nodes
    store = p.store
    namespace, name = p.observed.namespace, p.observed.name
    started = format_time(p.now)

    async def patch(restore: dict[str, Any]) -> None:
        await ctx.kube.patch(
            kube.KVSTORES, namespace, name, {"status": {"restore": restore}}, subresource="status"
        )

    async def work(op: Operation) -> None:
        base = {"backupId": source.backup_id, "directory": directory}
        await patch({**base, "phase": "Running", "startTime": started, "message": ""})
        ctx.events.normal(store, "RestoreStarted", f"replaying backup {source.backup_id} from {directory}")
        try:
            reply = await nodes.restore(address, directory, source.backup_id)
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
                "completionTime": format_time(utc_now()),
                "message": f"replayed {reply.records} records ({reply.keys} live keys)",
            }
        )
        ctx.events.normal(
            store, "Restored", f"backup {source.backup_id}: {reply.records} records, {reply.keys} live keys"
        )
        ctx.metrics.restores.labels(namespace, name, "succeeded").inc()

    return work

"""Step 5, membership: bootstrap, add and remove members one at a time, through Reconfigurer.

The decision is ``plan.plan_membership`` over the membership the nodes hold; the change runs as the
store's background operation. Every change is resumable: an operator that restarts finds a JOINING
or LEAVING member in the nodes' membership and finishes that change before anything else.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from kvnode.core.errors import FailedPrecondition
from kvoperator import plan
from kvoperator.reconciler import Operation, Pass

FAILURE_BACKOFF = 5.0


async def run(p: Pass) -> None:
    observed = p.observed
    spec = observed.spec
    reconciler = p.reconciler
    if spec is None:
        p.report.degrade("InvalidSpec", observed.spec_error)
        return
    ours = reconciler.operation is not None and reconciler.operation.kind == "membership"
    finished = reconciler.collect_operation() if ours else None
    if finished is not None:
        op, error = finished
        _finished(p, op, error)
    if reconciler.operation is not None:  # running, or another step's to collect
        p.report.operation = reconciler.operation.describe()
        p.report.progress(reconciler.operation.reason, reconciler.operation.describe())
        return
    serving = observed.serving_addresses(p.ctx.config)
    decision = plan.plan_membership(
        observed.name, spec.replicas, spec.replication_factor, observed.membership, serving
    )
    if decision.refusal:
        p.report.degrade("ScaleDownRefused", decision.refusal)
        if reconciler.refusal != decision.refusal:
            p.ctx.events.warning(p.store, "ScaleDownRefused", decision.refusal)
            p.ctx.metrics.scale_down_refusals.labels(observed.namespace, observed.name).inc()
    reconciler.refusal = decision.refusal
    if reconciler.last_failure is not None:
        p.report.degrade(*reconciler.last_failure)
    action = decision.action
    if action is None:
        reconciler.last_failure = None
        return
    if isinstance(action, plan.Wait):
        p.report.progress(action.reason, action.message)
        return
    if time.monotonic() < reconciler.retry_after:
        p.report.progress(_reason(action), f"{action.describe()} (retrying shortly)")
        return
    seeds = list(serving.values())
    op = reconciler.start_operation(
        "membership", _reason(action), action.describe(), _work(p, action, seeds), label=_kind(action)
    )
    p.report.operation = op.describe()
    p.report.progress(_reason(action), action.describe())


def _reason(action: plan.Action) -> str:
    if isinstance(action, plan.Bootstrap):
        return "Bootstrapping"
    if isinstance(action, plan.AddMember):
        return "ScalingUp"
    if isinstance(action, plan.RemoveMember):
        return "ScalingDown"
    if isinstance(action, plan.UpdateAddresses):
        return "UpdatingAddresses"
    return action.reason


def _kind(action: plan.Action) -> str:
    return {
        plan.Bootstrap: "bootstrap",
        plan.AddMember: "add",
        plan.RemoveMember: "remove",
        plan.UpdateAddresses: "address",
    }.get(type(action), "wait")


def _work(p: Pass, action: plan.Action, seeds: list[str]) -> Callable[[Operation], Awaitable[None]]:
    ctx = p.ctx
    store = p.store
    events = ctx.events

    async def work(op: Operation) -> None:
        def progress(message: str) -> None:
            op.progress = message

        started = time.monotonic()
        async with ctx.admin.reconfigurer(seeds, progress) as reconfig:
            if isinstance(action, plan.Bootstrap):
                await reconfig.install(action.membership)
                events.normal(
                    store,
                    "Bootstrapped",
                    f"membership epoch 1: {', '.join(m.id for m in action.membership.members)}",
                )
            elif isinstance(action, plan.AddMember):
                events.normal(
                    store, "MemberJoining", f"{action.member_id} joins; its partitions stream to it"
                )
                result = await reconfig.add(action.member_id, action.address)
                events.normal(
                    store, "MemberAdded", f"{action.member_id} is an active member (epoch {result.epoch})"
                )
            elif isinstance(action, plan.RemoveMember):
                events.normal(
                    store,
                    "MemberLeaving",
                    f"{action.member_id} is decommissioned: its data drains to the other members",
                )
                result = await reconfig.remove(action.member_id)
                events.normal(
                    store,
                    "MemberRemoved",
                    f"{action.member_id} left after its data was drained and verified (epoch {result.epoch})",
                )
            elif isinstance(action, plan.UpdateAddresses):
                await reconfig.install(action.membership)
                events.normal(store, "MemberAddressesUpdated", f"membership epoch {action.membership.epoch}")
        ctx.metrics.membership_change_duration.labels(_kind(action)).observe(time.monotonic() - started)

    return work


def _finished(p: Pass, op: Operation, error: BaseException | None) -> None:
    reconciler = p.reconciler
    observed = p.observed
    kind = op.label
    if error is None:
        reconciler.last_failure = None
        reconciler.retry_after = 0.0
        p.ctx.metrics.membership_changes.labels(observed.namespace, observed.name, kind).inc()
        return
    message = f"{op.description} failed: {error}"
    refused = isinstance(error, FailedPrecondition)
    reconciler.last_failure = ("MembershipChangeRefused" if refused else "MembershipChangeFailed", message)
    reconciler.retry_after = time.monotonic() + FAILURE_BACKOFF
    p.ctx.metrics.membership_change_failures.labels(observed.namespace, observed.name, kind).inc()
    p.ctx.events.warning(p.store, "MembershipChangeFailed", f"{message}; it will be retried")

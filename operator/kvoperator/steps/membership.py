"""Membership: bootstrap, add and remove members one at a time, through Reconfigurer.

The decision is ``plan.plan_membership`` over the membership the nodes hold; the change runs as the
store's background operation. Every change is resumable: an operator that restarts finds a JOINING
or LEAVING member in the nodes' membership and finishes that change before anything else. A failed
change is retried after a back-off kept in the status (``retries``, operation ``membership``), and
the scale-down refusal last announced is kept there too, so a restart neither hurries a retry nor
announces a refusal again.
"""

from __future__ import annotations

import time

from kvnode.core.errors import FailedPrecondition
from kvoperator import plan
from kvoperator.node_admin import MembershipChanger
from kvoperator.operation import Operation, Work
from kvoperator.passes import Pass

OPERATION = "membership"
FAILURE_BACKOFF = 5.0

REASONS: dict[type, str] = {
    plan.Bootstrap: "Bootstrapping",
    plan.AddMember: "ScalingUp",
    plan.RemoveMember: "ScalingDown",
    plan.UpdateAddresses: "UpdatingAddresses",
}
KINDS: dict[type, str] = {
    plan.Bootstrap: "bootstrap",
    plan.AddMember: "add",
    plan.RemoveMember: "remove",
    plan.UpdateAddresses: "address",
}


async def run(p: Pass) -> None:
    observed = p.observed
    spec = observed.spec
    if spec is None:
        p.report.degrade("InvalidSpec", observed.spec_error)
        return
    finished = p.operations.collect(OPERATION)
    if finished is not None:
        _finished(p, *finished)
    current = p.operations.current
    if current is not None:  # running, or another step's to collect
        p.report.operation = current.describe()
        p.report.progress(current.reason, current.describe())
        return
    serving = observed.serving_addresses(p.ctx.config)
    decision = plan.plan_membership(
        observed.name,
        spec.replicas,
        spec.replication_factor,
        observed.membership,
        serving,
        observed.peer_addresses(serving),
    )
    _refusal(p, decision.refusal)
    failure = p.memory.failure(OPERATION)
    if failure is not None:
        p.report.degrade(failure.reason, failure.message)
    action = decision.action
    if action is None:
        p.memory.clear_failure(OPERATION, p.now)
        return
    if isinstance(action, plan.Wait):
        p.report.progress(action.reason, action.message)
        return
    reason = REASONS[type(action)]
    if not p.memory.may_start(OPERATION, p.now):
        p.report.progress(reason, f"{action.describe()} (retrying shortly)")
        return
    work = _work(p, action, list(serving.values()))
    op = p.operations.start(OPERATION, reason, action.describe(), work, label=KINDS[type(action)])
    p.report.operation = op.describe()
    p.report.progress(reason, action.describe())


def _refusal(p: Pass, refusal: str) -> None:
    """Report a refused scale-down; announce each new refusal once (an event and the metric)."""
    if refusal:
        p.report.degrade("ScaleDownRefused", refusal)
        if p.memory.scale_down_refusal != refusal:
            p.ctx.events.warning(p.store, "ScaleDownRefused", refusal)
            p.ctx.metrics.scale_down_refusals.labels(p.observed.namespace, p.observed.name).inc()
    p.memory.scale_down_refusal = refusal


def _work(p: Pass, action: plan.Action, seeds: list[str]) -> Work:
    ctx, nodes = p.ctx, p.observed.nodes

    async def work(op: Operation) -> None:
        def progress(message: str) -> None:
            op.progress = message

        started = time.monotonic()
        async with nodes.reconfigurer(seeds, progress) as reconfig:
            await _change(p, reconfig, action)
        ctx.metrics.membership_change_duration.labels(KINDS[type(action)]).observe(time.monotonic() - started)

    return work


async def _change(p: Pass, reconfig: MembershipChanger, action: plan.Action) -> None:
    """Make the change, with an event before and after it."""
    store, events = p.store, p.ctx.events
    if isinstance(action, plan.Bootstrap):
        await reconfig.install(action.membership)
        members = ", ".join(m.id for m in action.membership.members)
        events.normal(store, "Bootstrapped", f"membership epoch 1: {members}")
    elif isinstance(action, plan.AddMember):
        events.normal(store, "MemberJoining", f"{action.member_id} joins; its partitions stream to it")
        result = await reconfig.add(action.member_id, action.address, action.peer_address)
        events.normal(store, "MemberAdded", f"{action.member_id} is an active member (epoch {result.epoch})")
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


def _finished(p: Pass, op: Operation, error: BaseException | None) -> None:
    observed = p.observed
    if error is None:
        p.memory.succeeded(OPERATION)
        p.ctx.metrics.membership_changes.labels(observed.namespace, observed.name, op.label).inc()
        return
    message = f"{op.description} failed: {error}"
    reason = "MembershipChangeRefused" if isinstance(error, FailedPrecondition) else "MembershipChangeFailed"
    p.memory.failed(OPERATION, p.now, FAILURE_BACKOFF, reason, message)
    p.ctx.metrics.membership_change_failures.labels(observed.namespace, observed.name, op.label).inc()
    p.ctx.events.warning(p.store, "MembershipChangeFailed", f"{message}; it will be retried")

"""The membership step: one change at a time as the store's operation, a back-off of its own after
a failure, and a refusal announced once; what it remembers survives an operator restart."""

from __future__ import annotations

import asyncio

from kvoperator.steps import membership, restore, status

from kvnode.core.errors import FailedPrecondition, Unavailable
from kvnode.core.membership import MemberState
from tests.operator.steps.world import World, at
from tests.operator.steps.world import membership as members_of


def scaling_up(world: World) -> None:
    """Four pods and a membership of three: the next change adds kv-3."""
    world.store(replicas=4)
    world.pods(4)
    world.admin.set_membership(members_of([0, 1, 2]))


async def test_a_store_is_bootstrapped_once_every_node_serves(world: World) -> None:
    world.store()
    world.pods(3, epoch=0)
    p = await world.run(membership.run)
    assert p.report.operation == "bootstrapping membership epoch 1 with 3 members"
    await world.settle()
    assert world.admin.reconfig.changes == ["install 1"]
    assert world.wakes == 1  # its end asks for a pass at once
    assert world.admin.newest().epoch == 1
    assert "Bootstrapped" in world.events.reasons()
    done = await world.run(membership.run, now=at(1))
    assert world.operation() is None and done.memory.retries == {}
    assert world.metric("kvstore_operator_membership_changes_total", action="bootstrap") == 1


async def test_a_second_change_never_starts_while_one_runs(world: World) -> None:
    scaling_up(world)
    world.admin.reconfig.gate = gate = asyncio.Event()
    await world.run(membership.run)
    await asyncio.wait_for(world.admin.reconfig.begun.wait(), timeout=5)
    p = await world.run(membership.run, now=at(1))
    assert p.report.progressing == [("ScalingUp", "adding kv-3: add kv-3 in progress")]
    assert p.report.operation == "adding kv-3: add kv-3 in progress"
    assert world.admin.reconfig.changes == ["add kv-3"]
    gate.set()
    await world.settle()
    assert [m.id for m in world.admin.newest().members] == ["kv-0", "kv-1", "kv-2", "kv-3"]


async def test_a_failed_change_is_reported_and_retried_after_its_back_off(world: World) -> None:
    scaling_up(world)
    world.admin.reconfig.error = Unavailable("kv-1 is unreachable")
    await world.run(membership.run, save=True)
    await world.settle()
    p = await world.run(membership.run, now=at(1), save=True)
    retry = p.memory.retries["membership"]
    assert retry.retry_after == at(1 + membership.FAILURE_BACKOFF)
    assert p.report.degraded == [("MembershipChangeFailed", "adding kv-3 failed: kv-1 is unreachable")]
    assert p.report.progressing == [("ScalingUp", "adding kv-3 (retrying shortly)")]
    assert "MembershipChangeFailed" in world.events.reasons()
    assert world.metric("kvstore_operator_membership_change_failures_total", action="add") == 1
    await world.run(membership.run, now=at(5.9), save=True)
    assert world.operation() is None
    await world.run(membership.run, now=at(6.1), save=True)
    assert world.operation() is not None
    await world.settle()
    assert world.admin.reconfig.changes == ["add kv-3", "add kv-3"]
    ok = await world.run(membership.run, now=at(7), save=True)
    assert ok.memory.retries == {} and ok.report.degraded == []
    assert world.status()["retries"] == []


async def test_a_refused_change_says_so(world: World) -> None:
    scaling_up(world)
    world.admin.reconfig.error = FailedPrecondition("stale epoch 1")
    await world.run(membership.run)
    await world.settle()
    p = await world.run(membership.run, now=at(1))
    assert p.report.degraded[0] == ("MembershipChangeRefused", "adding kv-3 failed: stale epoch 1")


async def test_an_operator_restart_keeps_the_back_off_and_the_failure(world: World) -> None:
    scaling_up(world)
    world.admin.reconfig.error = Unavailable("kv-1 is unreachable")
    await world.run(membership.run)
    await world.settle()
    await world.run(membership.run, now=at(1), save=True)
    retries = world.status()["retries"]
    assert [(r["operation"], r["reason"]) for r in retries] == [("membership", "MembershipChangeFailed")]

    restarted = world.restarted()
    p = await restarted.run(membership.run, now=at(3))
    assert restarted.operation() is None  # still backing off
    assert p.report.degraded == [("MembershipChangeFailed", "adding kv-3 failed: kv-1 is unreachable")]
    await restarted.run(membership.run, now=at(6.5))
    assert restarted.operation() is not None
    await restarted.settle()
    assert world.admin.reconfig.changes == ["add kv-3", "add kv-3"]


async def test_a_failed_restore_does_not_delay_a_membership_change(world: World) -> None:
    """Each step has its own back-off: a restore that failed a moment ago holds up only itself."""
    world.store(
        replicas=3,
        backup={"volume": {"claimName": "backups"}},
        restoreFrom={"backupId": "snap", "claimName": "backups", "path": "old"},
    )
    world.pods(3)
    world.admin.restore_error = Unavailable("the backup volume is gone")
    await world.run(membership.run, restore.run)
    await world.settle()
    assert world.admin.restores == [("10.0.0.1:7000", "/backups/old", "snap")]
    failed = await world.run(membership.run, restore.run, status.run, now=at(1))
    assert failed.memory.retries["restore"].retry_after == at(1 + restore.FAILURE_BACKOFF)

    world.edit(replicas=4)
    world.pod(3)
    p = await world.run(membership.run, restore.run, now=at(2))
    op = world.operation()
    assert op is not None and op.description == "adding kv-3"
    assert ("Restoring", "the restore waits for the store's current operation") in p.report.progressing


async def test_a_refusal_is_announced_once_even_across_a_restart(world: World) -> None:
    world.store(replicas=2)
    world.pods(3)
    p = await world.run(membership.run, save=True)
    assert p.report.degraded[0][0] == "ScaleDownRefused"
    assert world.events.reasons().count("ScaleDownRefused") == 1
    assert world.metric("kvstore_operator_scale_down_refusals_total") == 1
    await world.run(membership.run, now=at(1), save=True)
    restarted = world.restarted()
    again = await restarted.run(membership.run, now=at(2), save=True)
    assert again.report.degraded[0][0] == "ScaleDownRefused"  # still reported ...
    assert world.events.reasons().count("ScaleDownRefused") == 1  # ... but announced only once
    assert restarted.events.reasons().count("ScaleDownRefused") == 0
    world.edit(replicas=3)
    cleared = await restarted.run(membership.run, now=at(3), save=True)
    assert cleared.report.degraded == [] and world.status()["scaleDownRefusal"] == ""


async def test_a_leaving_member_is_removed_first(world: World) -> None:
    world.store(replicas=4)
    world.pods(4)
    world.admin.set_membership(members_of([0, 1, 2, 3], epoch=2, states={3: MemberState.LEAVING}))
    p = await world.run(membership.run)
    assert p.report.progressing == [("ScalingDown", "decommissioning kv-3")]
    await world.settle()
    assert world.admin.reconfig.changes == ["remove kv-3"]

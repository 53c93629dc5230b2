"""The restore step: once, on a settled store whose members all serve, from the source the
observation resolved; a failure is retried after the step's own back-off."""

from __future__ import annotations

from kvoperator import kube
from kvoperator.steps import restore

from kvnode.core.errors import Unavailable
from kvnode.core.membership import MemberState
from tests.operator.steps.world import World, at, backup_of_old_store, membership

BACKUP = {"volume": {"claimName": "backups"}}


def restoring(world: World, pods: int = 3, **source: str) -> None:
    world.store(backup=BACKUP, restoreFrom=source or {"backupName": "snap"})
    world.pods(pods)


async def test_it_restores_the_named_backup_once_from_the_restore_mount(world: World) -> None:
    world.kube.put(kube.KVBACKUPS, backup_of_old_store())
    restoring(world)
    p = await world.run(restore.run)
    assert p.report.progressing == [("Restoring", "restoring backup snap-id")] and p.report.restore_pending
    await world.settle()
    assert world.admin.restores == [("10.0.0.1:7000", "/restore/old", "snap-id")]
    state = world.status()["restore"]
    assert state["phase"] == "Succeeded" and state["keys"] == 10 and state["records"] == 12
    assert world.events.reasons() == ["RestoreStarted", "Restored"]
    await world.run(restore.run, now=at(1))  # collects it
    assert world.operation() is None
    done = await world.run(restore.run, now=at(2))
    assert world.operation() is None and not done.report.restore_pending
    assert len(world.admin.restores) == 1


async def test_a_backup_in_the_stores_own_volume_is_read_there(world: World) -> None:
    restoring(world, backupId="snap-id", claimName="backups", path="/old/")
    await world.run(restore.run)
    await world.settle()
    assert world.admin.restores == [("10.0.0.1:7000", "/backups/old", "snap-id")]


async def test_it_waits_for_a_settled_membership_and_every_member(world: World) -> None:
    world.kube.put(kube.KVBACKUPS, backup_of_old_store())
    restoring(world)
    world.admin.set_membership(membership([0, 1, 2], epoch=2, states={2: MemberState.LEAVING}))
    p = await world.run(restore.run)
    assert p.report.progressing == [("Restoring", "the restore waits for the membership to settle")]
    world.admin.set_membership(membership([0, 1, 2], epoch=3))
    world.pod(1, ready=False)
    p = await world.run(restore.run)
    assert p.report.progressing == [("Restoring", "the restore waits for every member to serve")]
    assert world.operation() is None and world.admin.restores == []


async def test_a_missing_or_unverified_backup_is_reported(world: World) -> None:
    restoring(world)
    p = await world.run(restore.run)
    assert p.report.degraded == [("RestoreSourceMissing", "KVBackup snap does not exist")]
    world.kube.put(kube.KVBACKUPS, backup_of_old_store(phase="Failed"))
    p = await world.run(restore.run)
    assert p.report.degraded == [
        ("RestoreSourceMissing", "KVBackup snap is not a verified backup (phase Failed)")
    ]
    assert world.operation() is None


async def test_a_failed_restore_is_retried_after_its_back_off(world: World) -> None:
    world.kube.put(kube.KVBACKUPS, backup_of_old_store())
    restoring(world)
    world.admin.restore_error = Unavailable("no such folder")
    await world.run(restore.run, save=True)
    await world.settle()
    assert world.status()["restore"]["phase"] == "Failed"
    assert "RestoreFailed" in world.events.reasons()
    failed = await world.run(restore.run, now=at(1), save=True)
    assert failed.memory.retries["restore"].retry_after == at(1 + restore.FAILURE_BACKOFF)
    assert [r["operation"] for r in world.status()["retries"]] == ["restore"]

    restarted = world.restarted()  # the back-off is in the status: a restart keeps it
    waiting = await restarted.run(restore.run, now=at(10))
    assert waiting.report.degraded == [("RestoreFailed", "no such folder")]
    assert ("Restoring", "the restore waits for the store's current operation") in waiting.report.progressing
    assert restarted.operation() is None
    world.admin.restore_error = None
    await restarted.run(restore.run, now=at(11.5))
    await restarted.settle()
    assert len(world.admin.restores) == 2 and world.status()["restore"]["phase"] == "Succeeded"

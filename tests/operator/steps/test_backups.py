"""The backups step: a KVBackup when the schedule is due (missed runs collapse into one), and
retention of scheduled backups."""

from __future__ import annotations

from typing import Any

from kvoperator import constants as c
from kvoperator import kube, names
from kvoperator.steps import backups

from tests.operator.steps.world import NS, STORE, World, at, membership

SCHEDULED = {"volume": {"claimName": "backups"}, "schedule": "@every 1h"}


def kvbackup(name: str, created: str, phase: str = "Succeeded", scheduled: bool = True) -> dict[str, Any]:
    labels = {**names.labels(STORE, "backup"), **({c.LABEL_SCHEDULED: "true"} if scheduled else {})}
    return {
        "metadata": {"name": name, "namespace": NS, "labels": labels, "creationTimestamp": created},
        "spec": {"storeName": STORE},
        "status": {"phase": phase, "backupId": name, "verified": phase == "Succeeded"},
    }


def backup_names(world: World) -> list[str]:
    return sorted(name for (res, _, name) in world.kube.objects if res == kube.KVBACKUPS)


async def test_a_due_run_creates_one_kvbackup_and_is_recorded(world: World) -> None:
    world.store(backup=SCHEDULED)  # created 2025-01-01: months of missed runs
    world.pods(3)
    p = await world.run(backups.run)
    assert backup_names(world) == ["kv-20250601-120000"]
    assert world.status()["backup"] == {
        "lastScheduleTime": "2025-06-01T12:00:00Z",
        "lastScheduledBackup": "kv-20250601-120000",
    }
    assert p.report.writes == ["created KVBackup kv-20250601-120000"]
    assert world.events.reasons() == ["BackupScheduled"]
    await world.run(backups.run, now=at(3599))
    assert backup_names(world) == ["kv-20250601-120000"]
    await world.run(backups.run, now=at(3600))
    assert backup_names(world) == ["kv-20250601-120000", "kv-20250601-130000"]


async def test_the_schedules_interval_is_exported_for_the_overdue_alert(world: World) -> None:
    world.store(backup={**SCHEDULED, "schedule": "0 */6 * * *"})
    world.pods(3)
    await world.run(backups.run)
    assert world.metric("kvstore_operator_backup_interval_seconds") == 6 * 3600
    world.store(backup={**SCHEDULED, "suspend": True})
    await world.run(backups.run)
    assert world.metric("kvstore_operator_backup_interval_seconds") == 0  # no run is due


async def test_a_kvbackup_created_by_an_unrecorded_pass_is_recorded(world: World) -> None:
    world.store(backup=SCHEDULED)
    world.pods(3)
    world.kube.put(kube.KVBACKUPS, kvbackup("kv-20250601-120000", "2025-06-01T12:00:00Z", phase="Running"))
    p = await world.run(backups.run)
    assert p.report.writes == [] and p.report.degraded == []
    assert world.status()["backup"]["lastScheduledBackup"] == "kv-20250601-120000"


async def test_nothing_runs_before_bootstrap_while_suspended_or_on_a_bad_schedule(world: World) -> None:
    world.store(backup=SCHEDULED)
    world.pods(3, epoch=0)
    await world.run(backups.run)
    world.admin.set_membership(membership([0, 1, 2], epoch=1))
    world.edit(backup={"suspend": True})
    await world.run(backups.run)
    world.edit(backup={"suspend": False, "schedule": "at noon"})
    p = await world.run(backups.run)
    assert p.report.degraded[0][0] == "InvalidSchedule"
    assert backup_names(world) == [] and world.events.reasons() == []


async def test_retention_keeps_the_newest_verified_scheduled_backups(world: World) -> None:
    world.store(backup={**SCHEDULED, "suspend": True, "retention": {"keep": 2}})
    world.pods(3)
    for hour in (9, 10, 11):
        name = f"kv-20250601-{hour:02d}0000"
        world.kube.put(kube.KVBACKUPS, kvbackup(name, f"2025-06-01T{hour:02d}:00:00Z"))
        world.admin.backups.setdefault("/backups/kv", {})[name] = int(at(0).timestamp()) - (12 - hour) * 3600
    world.admin.backups["/backups/kv"]["kv-20250601-080000"] = (
        int(at(0).timestamp()) - 4 * 3600
    )  # no KVBackup
    world.kube.put(kube.KVBACKUPS, kvbackup("manual", "2025-06-01T07:00:00Z", scheduled=False))
    p = await world.run(backups.run)
    assert backup_names(world) == ["kv-20250601-100000", "kv-20250601-110000", "manual"]
    assert sorted(world.admin.backups["/backups/kv"]) == ["kv-20250601-100000", "kv-20250601-110000"]
    assert p.report.writes == ["pruned backup kv-20250601-090000", "pruned backup kv-20250601-080000"]
    assert world.events.reasons() == ["BackupPruned", "BackupPruned"]
    assert world.metric("kvstore_operator_backups_pruned_total") == 2

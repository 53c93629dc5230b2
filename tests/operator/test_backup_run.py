"""Taking a KVBackup's backup over the fakes: every member's snapshot, every snapshot verified,
and what is retried (the store not ready) apart from what fails for good."""

from __future__ import annotations

import re
from typing import Any

import pytest
from kvoperator import kube
from kvoperator.backups import BackupFailed, NotReadyForBackup, run_backup
from kvoperator.node_admin import Health

from kvnode.api.v1 import admin_pb2
from kvnode.core.errors import FailedPrecondition
from tests.operator.steps.world import NS, World


def kvbackup(world: World, store: str = "kv", **status: Any) -> dict[str, Any]:
    return world.kube.put(
        kube.KVBACKUPS,
        {"metadata": {"name": "b1", "namespace": NS}, "spec": {"storeName": store}, "status": status},
    )


def backup_status(world: World) -> dict[str, Any]:
    body = world.kube.object(kube.KVBACKUPS, NS, "b1")
    assert body is not None
    return dict(body.get("status") or {})


def ready(world: World) -> None:
    world.store(backup={"volume": {"claimName": "backups"}, "path": "shop"})
    world.pods(3)
    for i in range(3):
        world.node(i).status = admin_pb2.StatusResponse(node_id=f"kv-{i}")


async def test_every_member_is_snapshotted_and_verified(world: World) -> None:
    ready(world)
    body = kvbackup(world)
    final = await run_backup(world.ctx, body)
    assert final["phase"] == "Succeeded" and final["verified"] is True and final["problems"] == []
    assert [n["name"] for n in final["nodes"]] == ["kv-0", "kv-1", "kv-2"] and final["keys"] == 10
    assert final["directory"] == "shop" and final["claimName"] == "backups"
    assert list(world.admin.backups) == ["/backups/shop"]
    assert backup_status(world) == final
    phases = [c.body["status"].get("phase") for c in world.kube.writes if c.resource == kube.KVBACKUPS]
    assert phases == ["Running", "Verifying", "Succeeded"]
    assert world.status()["lastBackup"]["name"] == "b1"
    assert world.events.reasons() == ["BackupSucceeded", "BackupSucceeded"]  # on the KVBackup and the store
    assert world.metric("kvstore_operator_backups_total", result="succeeded") == 1


async def test_a_snapshot_that_does_not_verify_fails_the_backup(world: World) -> None:
    ready(world)
    world.admin.verify_problems["kv-1"] = ["kv-1: sha256 mismatch"]
    final = await run_backup(world.ctx, kvbackup(world))
    assert final["phase"] == "Failed" and final["verified"] is False
    assert final["problems"] == ["kv-1: sha256 mismatch"]
    assert "lastBackup" not in world.status()
    assert world.events.reasons() == ["BackupFailed", "BackupFailed"]


async def test_a_member_that_does_not_serve_is_waited_for(world: World) -> None:
    ready(world)
    world.node(2).health = Health.UNREACHABLE
    with pytest.raises(NotReadyForBackup, match="members not serving: kv-2"):
        await run_backup(world.ctx, kvbackup(world))
    assert world.kube.writes == [] and world.admin.backups == {}


async def test_a_failed_snapshot_is_retried(world: World) -> None:
    ready(world)
    body = kvbackup(world)

    async def failing_backup(address: str, directory: str, backup_id: str) -> admin_pb2.BackupManifest:
        raise RuntimeError(f"{address}: disk full")

    world.admin.backup = failing_backup  # type: ignore[method-assign]
    with pytest.raises(
        NotReadyForBackup, match=re.escape("snapshot failed on kv-0: 10.0.0.1:7000: disk full")
    ):
        await run_backup(world.ctx, body)
    assert backup_status(world)["phase"] == "Running"


async def test_a_snapshot_the_node_refuses_fails_for_good_saying_why(world: World) -> None:
    """A missing bucket or refused credentials: retrying cannot help until someone fixes the setup."""
    ready(world)

    async def refused(address: str, directory: str, backup_id: str) -> admin_pb2.BackupManifest:
        if address.startswith("10.0.0.2"):
            raise FailedPrecondition("bucket 'nightly' does not exist (NoSuchBucket)")
        return admin_pb2.BackupManifest(node_id="x")

    world.admin.backup = refused  # type: ignore[method-assign]
    why = re.escape("snapshot refused on kv-1: bucket 'nightly' does not exist")
    with pytest.raises(BackupFailed, match=why):
        await run_backup(world.ctx, kvbackup(world))


async def test_a_backup_of_a_missing_store_fails_for_good(world: World) -> None:
    ready(world)
    with pytest.raises(BackupFailed, match="KVStore other does not exist"):
        await run_backup(world.ctx, kvbackup(world, store="other"))


async def test_a_backup_id_that_is_no_folder_name_fails_for_good(world: World) -> None:
    ready(world)
    with pytest.raises(BackupFailed, match="the KVBackup's name cannot be a backup id"):
        await run_backup(world.ctx, kvbackup(world, backupId="../etc"))
    assert world.admin.backups == {}


async def test_a_store_without_a_backup_volume_cannot_be_backed_up(world: World) -> None:
    world.store()
    world.pods(3)
    with pytest.raises(BackupFailed, match=re.escape("has no spec.backup")):
        await run_backup(world.ctx, kvbackup(world))


async def test_a_finished_backup_is_left_as_it_is(world: World) -> None:
    body = kvbackup(world, phase="Succeeded", verified=True)
    assert (await run_backup(world.ctx, body))["phase"] == "Succeeded"
    assert world.kube.calls == []

"""The StatefulSet step: the template, growing at once, shrinking only below pods that are no
members any more (read again right before), and the restore source's volume."""

from __future__ import annotations

from typing import Any

from kvoperator import kube, names
from kvoperator.steps import statefulset

from tests.operator.steps.world import NS, World, backup_of_old_store, hold, membership, statefulset_body


def sts(world: World) -> dict[str, Any]:
    body = world.kube.object(kube.STATEFULSETS, NS, "kv")
    assert body is not None
    return body


async def test_a_new_store_gets_its_pods_and_then_no_write(world: World) -> None:
    world.store(replicas=3)
    await world.run(statefulset.run)
    assert sts(world)["spec"]["replicas"] == 3
    assert "CreatedStatefulSet" in world.events.reasons()
    world.kube.forget_calls()
    await world.run(statefulset.run)
    assert world.kube.writes == []


async def test_a_bootstrapped_store_grows_at_once(world: World) -> None:
    world.store(replicas=3)
    world.pods(3)
    await world.run(statefulset.run)
    world.edit(replicas=5)
    p = await world.run(statefulset.run)
    assert sts(world)["spec"]["replicas"] == 5
    assert "scaled StatefulSet 3->5" in p.report.writes
    assert "ScalingUp" in world.events.reasons()


async def test_it_shrinks_once_the_members_left(world: World) -> None:
    world.store(replicas=3)
    world.pods(4)
    world.kube.put(kube.STATEFULSETS, statefulset_body(4))
    world.admin.set_membership(membership([0, 1, 2], epoch=4))  # kv-3 was decommissioned
    await world.run(statefulset.run)
    assert sts(world)["spec"]["replicas"] == 3
    assert "ScaledDown" in world.events.reasons()


async def test_it_reads_the_membership_again_before_it_shrinks(world: World) -> None:
    world.store(replicas=3)
    world.pods(4)
    world.kube.put(kube.STATEFULSETS, statefulset_body(4))
    world.admin.set_membership(membership([0, 1, 2], epoch=4))
    p = await world.new_pass()  # observed: kv-3 is no member
    world.admin.set_membership(membership([0, 1, 2, 3], epoch=5))  # ... but now it is again
    await statefulset.run(p)
    assert sts(world)["spec"]["replicas"] == 4
    assert "ScaledDown" not in world.events.reasons()


async def test_it_never_shrinks_while_an_operation_runs(world: World) -> None:
    world.store(replicas=3)
    world.pods(4)
    world.kube.put(kube.STATEFULSETS, statefulset_body(4))
    world.admin.set_membership(membership([0, 1, 2], epoch=4))
    p = await world.new_pass()
    world.operations.start("membership", "ScalingDown", "decommissioning kv-2", hold)
    await statefulset.run(p)
    assert sts(world)["spec"]["replicas"] == 4
    await world.operations.cancel()


async def test_the_volume_of_a_backup_to_restore_is_mounted(world: World) -> None:
    world.kube.put(kube.KVBACKUPS, backup_of_old_store())
    world.store(restoreFrom={"backupName": "snap"}, backup={"volume": {"claimName": "backups"}})
    await world.run(statefulset.run)
    volumes = {v["name"]: v for v in sts(world)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["restore"]["persistentVolumeClaim"] == {"claimName": "old-backups", "readOnly": True}
    assert volumes["backups"]["persistentVolumeClaim"] == {"claimName": "backups"}


async def test_a_statefulset_made_before_the_component_label_keeps_its_selector(world: World) -> None:
    """A StatefulSet's selector is immutable: one made by an older operator (name and instance
    only) is left as it is, while its template (whose pods carry the component label anyway) is
    brought up to date. New StatefulSets select on the component label too."""
    world.store(replicas=3)
    world.pods(3)
    legacy = statefulset_body(3)
    legacy["spec"]["selector"] = {"matchLabels": names.legacy_selector_labels("kv")}
    world.kube.put(kube.STATEFULSETS, legacy)
    await world.run(statefulset.run)
    patched = sts(world)
    assert patched["spec"]["selector"] == {"matchLabels": names.legacy_selector_labels("kv")}
    assert names.selector_labels("kv").items() <= patched["spec"]["template"]["metadata"]["labels"].items()
    patches = [call.body for call in world.kube.calls if call.verb == "patch/json"]
    assert patches and not any(op["path"].startswith("/spec/selector") for ops in patches for op in ops)

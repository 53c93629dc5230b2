"""The config step: the seed peer list covers every pod that exists or is about to."""

from __future__ import annotations

from kvoperator import kube
from kvoperator.steps import config

from tests.operator.steps.world import NS, World, membership, statefulset_body


def peers(world: World) -> list[str]:
    body = world.kube.object(kube.CONFIGMAPS, NS, "kv-config")
    assert body is not None
    return [entry.split("=")[0] for entry in body["data"]["peers"].split(",")]


async def test_it_creates_the_configmap_once_and_then_writes_nothing(world: World) -> None:
    world.store()
    world.pods(3)
    first = await world.run(config.run)
    assert peers(world) == ["kv-0", "kv-1", "kv-2"]
    body = world.kube.object(kube.CONFIGMAPS, NS, "kv-config")
    assert body is not None and body["metadata"]["ownerReferences"][0]["uid"] == "store-uid"
    assert first.report.writes == ["created ConfigMap kv-config"]
    assert "CreatedConfigMap" in world.events.reasons()
    world.kube.forget_calls()
    again = await world.run(config.run)
    assert again.report.writes == [] and world.kube.writes == []


async def test_a_scale_up_lists_the_new_pods_before_they_start(world: World) -> None:
    world.store(replicas=5)
    world.pods(3)
    await world.run(config.run)
    assert peers(world) == [f"kv-{i}" for i in range(5)]


async def test_a_pod_still_to_be_removed_stays_listed(world: World) -> None:
    world.store(replicas=3)
    world.pods(4)
    world.admin.set_membership(membership([0, 1, 2], epoch=3))  # kv-3 has left; its pod is still there
    world.kube.put(kube.STATEFULSETS, statefulset_body(4))
    await world.run(config.run)
    assert peers(world) == ["kv-0", "kv-1", "kv-2", "kv-3"]


async def test_a_changed_spec_updates_the_list_with_a_json_patch(world: World) -> None:
    world.store(replicas=3)
    world.pods(3)
    await world.run(config.run)
    world.edit(replicas=4)
    world.kube.forget_calls()
    second = await world.run(config.run)
    assert [c.verb for c in world.kube.writes] == ["patch/json"]
    assert second.report.writes == ["updated ConfigMap kv-config"]
    assert peers(world) == ["kv-0", "kv-1", "kv-2", "kv-3"]


async def test_a_configmap_of_someone_else_is_left_alone(world: World) -> None:
    world.store()
    world.pods(3)
    world.kube.put(
        kube.CONFIGMAPS, {"metadata": {"name": "kv-config", "namespace": NS}, "data": {"peers": "mine"}}
    )
    p = await world.run(config.run)
    assert world.kube.writes == []
    assert p.report.degraded[0][0] == "ForeignObject"
    body = world.kube.object(kube.CONFIGMAPS, NS, "kv-config")
    assert body is not None and body["data"] == {"peers": "mine"}

"""The pod-health step: a node failing health checks past the threshold is restarted (counting from
a time kept in the status), a pod stuck Terminating on a NotReady node is force-deleted, and a
rebuild is reported once."""

from __future__ import annotations

from kvoperator import kube
from kvoperator.node_admin import Health
from kvoperator.steps import pod_health

from kvnode.api.v1 import admin_pb2
from tests.operator.steps.world import NS, World, at, pod_body, statefulset_body


def failing(world: World, ordinal: int) -> None:
    world.node(ordinal).health = Health.NOT_SERVING


def deletes(world: World) -> list[tuple[str, object]]:
    return [(c.name, c.body) for c in world.kube.writes if c.verb == "delete"]


def rebuilding(world: World, ordinal: int, running: bool = True) -> None:
    transfer = admin_pb2.TransferStatus(
        kind="rebuild", partitions_total=16, partitions_done=16 if not running else 3
    )
    world.node(ordinal).status = admin_pb2.StatusResponse(rebuilding=running, transfer=transfer)
    world.node(ordinal).health = Health.NOT_SERVING if running else Health.SERVING


async def test_a_failing_node_is_restarted_after_the_threshold(world: World) -> None:
    world.store()
    world.pods(3)
    failing(world, 1)
    first = await world.run(pod_health.run, save=True)
    assert first.report.degraded == [("MemberUnhealthy", "kv-1 fails health checks for 0s: NotServing")]
    assert world.status()["podHealth"] == [
        {"name": "kv-1", "uid": "kv-1-uid", "restartCount": 0, "failingSince": "2025-06-01T12:00:00.000000Z"}
    ]
    await world.run(pod_health.run, now=at(59.9), save=True)
    assert deletes(world) == []
    p = await world.run(pod_health.run, now=at(60), save=True)
    assert deletes(world) == [("kv-1", {"grace": None, "uid": "kv-1-uid"})]
    assert world.events.reasons() == ["RestartedUnhealthyPod"]
    assert world.metric("kvstore_operator_pod_repairs_total", kind="restart_unhealthy") == 1
    assert p.memory.pods == {} and world.status()["podHealth"] == []


async def test_an_operator_restart_does_not_start_the_count_again(world: World) -> None:
    world.store()
    world.pods(3)
    failing(world, 1)
    await world.run(pod_health.run, save=True)
    restarted = world.restarted()
    await restarted.run(pod_health.run, now=at(60), save=True)
    assert deletes(world) == [("kv-1", {"grace": None, "uid": "kv-1-uid"})]


async def test_a_new_start_of_the_container_gets_the_whole_threshold(world: World) -> None:
    world.store()
    world.pods(3)
    failing(world, 1)
    await world.run(pod_health.run, save=True)
    world.kube.put(kube.PODS, pod_body(1, restarts=1))  # the kubelet restarted it
    later = await world.run(pod_health.run, now=at(30), save=True)
    assert later.memory.pods["kv-1"].failing_since == at(30)
    await world.run(pod_health.run, now=at(89), save=True)
    assert deletes(world) == []
    await world.run(pod_health.run, now=at(90), save=True)
    assert [name for name, _ in deletes(world)] == ["kv-1"]


async def test_serving_again_clears_the_record(world: World) -> None:
    world.store()
    world.pods(3)
    failing(world, 1)
    await world.run(pod_health.run, save=True)
    world.node(1).health = Health.SERVING
    healthy = await world.run(pod_health.run, now=at(50), save=True)
    assert healthy.report.degraded == [] and world.status()["podHealth"] == []
    failing(world, 1)
    await world.run(pod_health.run, now=at(70), save=True)
    await world.run(pod_health.run, now=at(100), save=True)
    assert deletes(world) == []  # 30s of failing, not 100


async def test_a_pod_stuck_terminating_on_a_notready_node_is_force_deleted(world: World) -> None:
    world.store()
    world.pods(3)
    stuck = pod_body(2, node="node-b")
    stuck["metadata"]["deletionTimestamp"] = "2025-06-01T11:54:00Z"  # 360s before the pass
    world.kube.put(kube.PODS, stuck)
    node = {"metadata": {"name": "node-b"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    world.kube.put(kube.NODES, node)
    await world.run(pod_health.run)
    assert deletes(world) == []  # its node will confirm the deletion
    node["status"] = {"conditions": [{"type": "Ready", "status": "False"}]}
    world.kube.put(kube.NODES, node)
    await world.run(pod_health.run)
    assert deletes(world) == [("kv-2", {"grace": 0, "uid": "kv-2-uid"})]
    assert world.kube.object(kube.PODS, NS, "kv-2") is None
    assert world.events.reasons() == ["ForceDeletedStuckPod"]
    assert world.metric("kvstore_operator_pod_repairs_total", kind="force_delete_stuck") == 1


async def test_a_pod_within_its_grace_is_left_to_terminate(world: World) -> None:
    world.store()
    world.pods(3)
    stuck = pod_body(2, node="gone")
    stuck["metadata"]["deletionTimestamp"] = "2025-06-01T11:58:00Z"  # 120s: within the 300s grace
    world.kube.put(kube.PODS, stuck)
    await world.run(pod_health.run)
    assert deletes(world) == []
    await world.run(pod_health.run, now=at(181))
    assert deletes(world) == [("kv-2", {"grace": 0, "uid": "kv-2-uid"})]  # a Node that is gone


async def test_a_rebuild_is_healthy_and_reported_once_even_across_a_restart(world: World) -> None:
    world.store()
    world.pods(3)
    rebuilding(world, 0)
    p = await world.run(pod_health.run, save=True)
    assert p.report.degraded == []
    assert p.report.progressing == [("Rebuilding", "kv-0 is rebuilding its data from its peers")]
    assert world.events.reasons() == ["RebuildStarted"]
    await world.run(pod_health.run, now=at(1), save=True)
    rebuilding(world, 0, running=False)
    await world.run(pod_health.run, now=at(2), save=True)
    assert world.events.reasons() == ["RebuildStarted", "RebuildFinished"]
    assert world.status()["podHealth"] == [
        {"name": "kv-0", "uid": "kv-0-uid", "restartCount": 0, "rebuild": "Finished"}
    ]
    restarted = world.restarted()
    await restarted.run(pod_health.run, now=at(3), save=True)
    assert restarted.events.reasons() == []
    assert world.metric("kvstore_operator_pod_repairs_total", kind="rebuild") == 1
    world.kube.put(kube.PODS, pod_body(0, restarts=1))  # lost its volume again, and rebuilt again
    await restarted.run(pod_health.run, now=at(4), save=True)
    assert restarted.events.reasons() == ["RebuildStarted", "RebuildFinished"]


async def test_a_new_pod_is_no_rebuild_and_is_reported_as_starting(world: World) -> None:
    world.store(replicas=4)
    world.pods(3)
    world.pod(3, ready=False)
    world.node(3).health = Health.NOT_SERVING
    world.node(3).status = admin_pb2.StatusResponse(transfer=admin_pb2.TransferStatus(kind="rebuild"))
    p = await world.run(pod_health.run)
    assert "RebuildStarted" not in world.events.reasons()
    assert ("PodsStarting", "pods starting: kv-3") in p.report.progressing
    world.pod(2, ready=False)
    p = await world.run(pod_health.run)
    assert ("MembersNotReady", "members whose pods are not Ready: kv-2") in p.report.degraded


async def test_a_pod_the_rolling_update_has_yet_to_replace_is_left_to_it(world: World) -> None:
    """After an upgrade to TLS the old pods are plaintext: they fail the operator's TLS health
    checks, and the rollout, not the operator, replaces them one at a time."""
    world.store()
    world.pods(3)
    for ordinal, revision in ((0, "kv-new"), (1, "kv-old"), (2, "kv-old")):
        world.kube.objects[kube.PODS, NS, f"kv-{ordinal}"]["metadata"]["labels"][
            "controller-revision-hash"
        ] = revision
    sts = statefulset_body(3)
    sts["status"] = {"currentRevision": "kv-old", "updateRevision": "kv-new"}
    world.kube.put(kube.STATEFULSETS, sts)
    failing(world, 1)
    failing(world, 0)
    await world.run(pod_health.run, save=True)
    await world.run(pod_health.run, now=at(600), save=True)
    assert deletes(world) == [("kv-0", {"grace": None, "uid": "kv-0-uid"})]  # the new one, not kv-1

"""Pod repair with real nodes: a Running pod whose node fails health checks is restarted, a pod
stuck Terminating on a NotReady node is force-deleted, and a node whose volume was lost rebuilds
from its peers before it counts as healthy (and is left alone meanwhile)."""

from __future__ import annotations

import grpc
from kvoperator import kube

from kvnode.api.v1 import admin_pb2, admin_pb2_grpc
from kvnode.testing.processes import free_port, wait_for
from tests.operator.conftest import NAMESPACE, OperatorThread
from tests.operator.helpers import (
    events,
    is_available,
    metric,
    missing_keys,
    put_keys,
    reasons,
    wait_event,
    wait_status,
)
from tests.operator.kubectl import Kubectl
from tests.operator.manifests import kvstore
from tests.operator.sim import ClusterSim

KEYS = [b"repair-%03d" % i for i in range(200)]


def node_status(address: str) -> admin_pb2.StatusResponse:
    with grpc.insecure_channel(address) as channel:
        reply: admin_pb2.StatusResponse = admin_pb2_grpc.AdminStub(channel).Status(
            admin_pb2.StatusRequest(), timeout=5
        )
    return reply


def pod_uid(kubectl: Kubectl, name: str) -> str:
    body = kubectl.get(kube.PODS, NAMESPACE, name)
    return "" if body is None else str(body["metadata"]["uid"])


def test_each_pod_repair_path(kubectl: Kubectl, sim: ClusterSim, operator: OperatorThread) -> None:
    port = free_port()
    kubectl.create(kube.KVSTORES, NAMESPACE, kvstore("demo", NAMESPACE, port=port, metrics_port=free_port()))
    wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available with 3 members")
    acked = put_keys(sim.address("demo", 0, port), KEYS)
    listen = operator.config.metrics_listen

    # Running, but the node answers nothing (SIGSTOP): deleted after the threshold, restarted.
    old = pod_uid(kubectl, "demo-1")
    sim.pause("demo-1")
    wait_for(lambda: pod_uid(kubectl, "demo-1") not in ("", old), 30, "demo-1 to be deleted and recreated")
    wait_event(kubectl, "RestartedUnhealthyPod")
    assert metric(listen, "kvstore_operator_pod_repairs_total", store="demo", kind="restart_unhealthy") == 1
    wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available after the restart")

    # Stuck Terminating on a node that went NotReady (say, a drain of a dead node).
    node = sim.node_of("demo-2")
    sim.set_node_ready(node, False)
    old = pod_uid(kubectl, "demo-2")
    kubectl.delete(kube.PODS, NAMESPACE, "demo-2", grace=1)
    wait_for(
        lambda: pod_uid(kubectl, "demo-2") not in ("", old), 30, "demo-2 to be force-deleted and recreated"
    )
    wait_event(kubectl, "ForceDeletedStuckPod")
    assert metric(listen, "kvstore_operator_pod_repairs_total", store="demo", kind="force_delete_stuck") == 1
    assert sim.node_of("demo-2") != node  # rescheduled on a Ready node
    wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available after the force-delete")
    sim.set_node_ready(node, True)

    # The volume is lost: the node comes back empty, rebuilds from its peers, then serves.
    repairs = reasons(kubectl).count("RestartedUnhealthyPod")
    assert "RebuildStarted" not in reasons(kubectl)  # new pods and restarts on a kept volume are no rebuild
    old_container = sim.container("demo-0")
    sim.lose_volume("demo-0")
    wait_for(lambda: sim.container("demo-0") is not old_container, 10, "the kubelet to restart demo-0")

    def rebuilt() -> bool:
        reply = node_status(sim.address("demo", 0, port))
        return not reply.rebuilding and reply.keys > 0  # it holds its partitions again

    wait_for(rebuilt, 60, "demo-0 to rebuild its data from its peers")
    wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available after the rebuild", timeout=60)
    assert reasons(kubectl).count("RestartedUnhealthyPod") == repairs  # a rebuild is not a failure
    assert missing_keys(sim.address("demo", 0, port), acked) == []
    # Reported once, though it took milliseconds (the node's transfer status shows it was one).
    wait_event(kubectl, "RebuildStarted")
    wait_event(kubectl, "RebuildFinished")
    rebuilt_events = [(r, m) for r, m in events(kubectl) if r.startswith("Rebuild")]
    assert sorted(r for r, _ in rebuilt_events) == ["RebuildFinished", "RebuildStarted"], rebuilt_events
    assert all(m.startswith("demo-0 ") for _, m in rebuilt_events)
    assert metric(listen, "kvstore_operator_pod_repairs_total", store="demo", kind="rebuild") == 1

"""A KVStore's life against kmock and real nodes: children, status that follows the pods,
idempotent steps, deletion without a finalizer (with the operator running, and without it)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from kvoperator import constants as c
from kvoperator import kube
from kvoperator.config import OperatorConfig
from kvoperator.context import OperatorContext
from kvoperator.kube import KubeClient, login
from kvoperator.reconciler import StoreReconciler
from kvoperator.steps import STEPS

from kvnode.testing.processes import free_port, wait_for
from tests.operator.conftest import NAMESPACE, OperatorThread
from tests.operator.helpers import condition, is_available, put_keys, store, wait_event, wait_status
from tests.operator.kubectl import Kubectl
from tests.operator.manifests import kvstore
from tests.operator.sim import ClusterSim


def create(kubectl: Kubectl, name: str = "demo", **kwargs: object) -> dict[str, object]:
    body = kvstore(name, NAMESPACE, port=free_port(), metrics_port=free_port(), **kwargs)  # type: ignore[arg-type]
    return kubectl.create(kube.KVSTORES, NAMESPACE, body)


def owned_by(body: dict[str, Any] | None, uid: str) -> bool:
    assert body is not None
    refs = body["metadata"].get("ownerReferences") or []
    return any(r["uid"] == uid and r["controller"] and r["kind"] == "KVStore" for r in refs)


def test_create_builds_owned_children_and_status_follows_the_pods(
    kubectl: Kubectl, sim: ClusterSim, operator: OperatorThread
) -> None:
    created = create(kubectl)
    uid = created["metadata"]["uid"]  # type: ignore[index]
    wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available with 3 members")

    cm = kubectl.get(kube.CONFIGMAPS, NAMESPACE, "demo-config")
    headless = kubectl.get(kube.SERVICES, NAMESPACE, "demo-headless")
    client = kubectl.get(kube.SERVICES, NAMESPACE, "demo")
    sts = kubectl.get(kube.STATEFULSETS, NAMESPACE, "demo")
    pdb = kubectl.get(kube.PDBS, NAMESPACE, "demo")
    for child in (cm, headless, client, sts, pdb):
        assert owned_by(child, uid)
    assert (
        cm
        and cm["data"]["peers"].count("=") == 3
        and "demo-2.demo-headless.kv-test.svc" in cm["data"]["peers"]
    )
    assert (
        headless and headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"]
    )
    selector = {c.LABEL_NAME: "kvstore", c.LABEL_INSTANCE: "demo", c.LABEL_COMPONENT: "node"}
    assert client and client["spec"]["selector"] == selector
    assert (
        headless["spec"]["selector"] == selector
        and pdb
        and pdb["spec"]["selector"]["matchLabels"] == selector
    )
    assert sts is not None
    spec = sts["spec"]
    assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "demo-headless"
    assert spec["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"] for e in container["env"]}
    assert {"KVNODE_NODE_ID", "KVNODE_PEERS", "KVNODE_ADVERTISE", "KVNODE_DATA_DIR"} <= env
    assert container["readinessProbe"]["grpc"]["service"] == ""
    assert spec["selector"]["matchLabels"] == selector
    # Real storage and load: no chown of the whole volume at each start, probes that tolerate a
    # busy node, and a bounded /tmp for backup verification.
    pod_spec = spec["template"]["spec"]
    assert pod_spec["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert (
        container["readinessProbe"]["timeoutSeconds"] > 1 and container["livenessProbe"]["timeoutSeconds"] > 1
    )
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod_spec["volumes"]
    # No blockOwnerDeletion: it would need update on kvstores/finalizers, which nothing grants.
    for child in (cm, headless, client, sts, pdb):
        assert child is not None
        assert not any(ref.get("blockOwnerDeletion") for ref in child["metadata"]["ownerReferences"])
    assert pdb and pdb["spec"]["maxUnavailable"] == 1
    for reason in ("CreatedStatefulSet", "CreatedService", "Bootstrapped"):
        wait_event(kubectl, reason)
    status = store(kubectl, "demo")["status"]
    assert status["phase"] == "Running" and status["membershipEpoch"] == 1

    # A node that stops answering: the status says so, and recovers with it.
    sim.pause("demo-1")
    body = wait_status(
        kubectl,
        "demo",
        lambda s: s.get("readyReplicas") == 2 or any(not m["ready"] for m in s.get("members", [])),
        "demo-1 reported not ready",
        timeout=20,
    )
    sim.resume("demo-1")
    assert condition(body, "Degraded")["status"] == "True" or body["status"]["readyReplicas"] == 2
    assert condition(body, "Available")["status"] == "True"  # one of three down: quorum holds
    wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available again")
    body = store(kubectl, "demo")
    assert condition(body, "Degraded")["status"] == "False"


def test_a_store_whose_nodes_all_stop_answering_says_so(
    kubectl: Kubectl, sim: ClusterSim, config: OperatorConfig
) -> None:
    """Every node frozen: the status keeps the last epoch and members and says that no member is
    reachable (it used to say Creating, epoch 0, no members, not Degraded)."""
    runner = OperatorThread(replace(config, unhealthy_pod_threshold=0.0)).start()  # no restarts
    try:
        create(kubectl)
        wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available with 3 members")
        for i in range(3):
            sim.pause(f"demo-{i}")
        body = wait_status(
            kubectl,
            "demo",
            lambda s: condition({"status": s}, "Degraded").get("reason") == "NoMemberReachable",
            "Degraded/NoMemberReachable",
            timeout=30,
        )
        status = body["status"]
        assert status["phase"] == "Degraded" and status["membershipEpoch"] == 1
        assert [m["name"] for m in status["members"]] == ["demo-0", "demo-1", "demo-2"]
        assert condition(body, "Available")["reason"] == "NoMemberReachable"
        assert "of 3 pods" in condition(body, "Degraded")["message"]
        for i in range(3):
            sim.resume(f"demo-{i}")
        wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available again")
        assert store(kubectl, "demo")["status"]["membershipEpoch"] == 1
    finally:
        runner.stop()


def test_every_step_is_idempotent(
    kubectl: Kubectl, sim: ClusterSim, operator: OperatorThread, tmp_path: Path
) -> None:
    create(kubectl)
    wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available with 3 members")
    put_keys(
        sim.address("demo", 0, store(kubectl, "demo")["spec"]["port"]), [b"k%03d" % i for i in range(50)]
    )
    operator.stop()

    async def passes() -> tuple[list[str], list[list[str]]]:
        ctx = OperatorContext.create(operator.config, KubeClient(login()))
        try:
            reconciler = StoreReconciler(ctx, NAMESPACE, "demo")
            first = await reconciler.reconcile_once()
            assert first is not None
            singles = []
            for step in STEPS:  # each step alone, twice
                await reconciler.reconcile_once([step])
                again = await reconciler.reconcile_once([step])
                assert again is not None
                singles.append(again.report.writes)
            return first.report.writes, singles
        finally:
            await ctx.kube.close()

    first, singles = asyncio.run(passes())
    assert first == [] or first == ["status"], first  # the operator left it converged
    assert all(writes == [] for writes in singles), singles


CHILDREN = (
    (kube.STATEFULSETS, "demo"),
    (kube.SERVICES, "demo"),
    (kube.SERVICES, "demo-headless"),
    (kube.CONFIGMAPS, "demo-config"),
    (kube.PDBS, "demo"),
)


def wait_children_gone(kubectl: Kubectl, sim: ClusterSim) -> None:
    wait_for(
        lambda: all(kubectl.get(resource, NAMESPACE, name) is None for resource, name in CHILDREN),
        30,
        "the store's children to be gone",
    )
    wait_for(lambda: not kubectl.list(kube.PODS, NAMESPACE), 30, "the pods to be gone")
    wait_for(
        lambda: not any(ct.process.poll() is None for ct in sim.containers.values()), 30, "nodes stopped"
    )


def test_deleting_the_store_needs_no_finalizer_and_cleans_up(
    kubectl: Kubectl, sim: ClusterSim, operator: OperatorThread
) -> None:
    create(kubectl)
    wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available with 3 members")
    body = store(kubectl, "demo")
    assert not body["metadata"].get("finalizers"), body["metadata"].get("finalizers")
    stores = operator.memo["stores"]  # type: ignore[index]
    assert stores.running(NAMESPACE, "demo")
    kubectl.delete(kube.KVSTORES, NAMESPACE, "demo")
    assert kubectl.get(kube.KVSTORES, NAMESPACE, "demo") is None  # at once: nothing holds it
    wait_for(lambda: not stores.running(NAMESPACE, "demo"), 15, "the store's reconcile loop to stop")
    wait_children_gone(kubectl, sim)
    # The volumes stay (persistentVolumeClaimRetentionPolicy whenDeleted: Retain).
    assert all(sim.pvc_dir(f"demo-{i}").is_dir() for i in range(3))


def test_a_store_deleted_after_the_operator_is_gone_still_goes_with_its_children(
    kubectl: Kubectl, sim: ClusterSim, operator: OperatorThread
) -> None:
    """``helm uninstall`` removes the operator before the KVStore (Helm deletes unknown kinds
    last): nothing may wait for the operator then."""
    create(kubectl)
    wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available with 3 members")
    operator.stop()
    kubectl.delete(kube.KVSTORES, NAMESPACE, "demo")
    assert kubectl.get(kube.KVSTORES, NAMESPACE, "demo") is None
    wait_children_gone(kubectl, sim)


def test_the_finalizer_of_older_versions_is_removed(
    kubectl: Kubectl, sim: ClusterSim, config: OperatorConfig
) -> None:
    """Stores made by an older operator carry kvstore.dev/finalizer; this one takes it off, so
    they too can be deleted without it."""
    body = kvstore("demo", NAMESPACE, port=free_port(), metrics_port=free_port())
    body["metadata"]["finalizers"] = [f"{c.GROUP}/finalizer"]
    kubectl.create(kube.KVSTORES, NAMESPACE, body)
    runner = OperatorThread(config).start()
    try:
        wait_for(
            lambda: not store(kubectl, "demo")["metadata"].get("finalizers"), 30, "the old finalizer to go"
        )
        wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available with 3 members")
    finally:
        runner.stop()

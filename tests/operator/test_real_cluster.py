"""What a real cluster does that a bare API mock does not (issue 15): the operator runs as its
service account with exactly the chart's RBAC, the namespace controller deletes a namespace's Role
along with its KVStore, the OwnerReferencesPermissionEnforcement plugin checks owner references,
watches are filtered by label selectors, and invalid names are refused with 422. The test API
server (apiserver.py, rbac.py) emulates each of these and cites the Kubernetes source it follows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kvoperator import constants as c
from kvoperator import kube
from kvoperator.config import OperatorConfig

from kvnode.testing.processes import free_port, wait_for
from tests.operator import rbac
from tests.operator.apiserver import ApiServerThread
from tests.operator.conftest import NAMESPACE, OperatorThread
from tests.operator.helpers import condition, is_available, reasons, wait_event, wait_status
from tests.operator.kubectl import ApiError, Kubectl
from tests.operator.manifests import kvstore
from tests.operator.sim import ClusterSim

RELEASE_NS = "kvstore-system"
OPERATOR_USER = f"system:serviceaccount:{RELEASE_NS}:kvstore-operator"
ROLES = kube.Resource("rbac.authorization.k8s.io", "v1", "roles")
ROLEBINDINGS = kube.Resource("rbac.authorization.k8s.io", "v1", "rolebindings")
CLUSTERROLES = kube.Resource("rbac.authorization.k8s.io", "v1", "clusterroles", namespaced=False)
CLUSTERROLEBINDINGS = kube.Resource(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", namespaced=False
)


def grant_like_the_chart(kubectl: Kubectl) -> None:
    """The chart's RBAC for ``operator.watchNamespaces: [kv-test]`` (templates/rbac.yaml): a Role
    and RoleBinding in the watched namespace, and a ClusterRole that reads Nodes."""
    subject = {"kind": "ServiceAccount", "name": "kvstore-operator", "namespace": RELEASE_NS}
    api = "rbac.authorization.k8s.io/v1"
    kubectl.create(
        CLUSTERROLES,
        None,
        {
            "apiVersion": api,
            "kind": "ClusterRole",
            "metadata": {"name": "kvstore-operator-nodes"},
            "rules": rbac.chart_rules("kvstore.clusterRules"),
        },
    )
    kubectl.create(
        CLUSTERROLEBINDINGS,
        None,
        {
            "apiVersion": api,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kvstore-operator-nodes"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "kvstore-operator-nodes",
            },
            "subjects": [subject],
        },
    )
    kubectl.create(
        ROLES,
        NAMESPACE,
        {
            "apiVersion": api,
            "kind": "Role",
            "metadata": {"name": "kvstore-operator", "namespace": NAMESPACE},
            "rules": rbac.chart_rules("kvstore.namespacedRules"),
        },
    )
    kubectl.create(
        ROLEBINDINGS,
        NAMESPACE,
        {
            "apiVersion": api,
            "kind": "RoleBinding",
            "metadata": {"name": "kvstore-operator", "namespace": NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kvstore-operator"},
            "subjects": [subject],
        },
    )


@pytest.fixture
def as_service_account(api: ApiServerThread, kubectl: Kubectl) -> Iterator[ApiServerThread]:
    """The operator's kubeconfig token is its service account's; the test's requests stay admin."""
    assert api.server is not None
    grant_like_the_chart(kubectl)
    api.server.tokens = {"test-token": OPERATOR_USER}
    yield api


def create_store(kubectl: Kubectl, name: str = "demo") -> dict[str, Any]:
    body = kvstore(name, NAMESPACE, port=free_port(), metrics_port=free_port())
    return kubectl.create(kube.KVSTORES, NAMESPACE, body)


def namespace_exists(kubectl: Kubectl) -> bool:
    try:
        kubectl.request("GET", f"/api/v1/namespaces/{NAMESPACE}")
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_deleting_the_namespace_deletes_the_store_though_the_operators_role_goes_first(
    as_service_account: ApiServerThread, kubectl: Kubectl, sim: ClusterSim, config: OperatorConfig
) -> None:
    """Item 1: the namespace controller deletes the operator's Role and RoleBinding in the same
    sweep as the KVStore. An operator that must still patch the store (to remove a finalizer) is
    denied, and the store and the namespace stay Terminating for good."""
    runner = OperatorThread(config).start()
    try:
        create_store(kubectl)
        wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available with 3 members")
        kubectl.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}")
        wait_for(lambda: not namespace_exists(kubectl), 60, "the namespace to be gone")
        assert kubectl.list(kube.KVSTORES, NAMESPACE) == []
        assert kubectl.list(kube.STATEFULSETS, NAMESPACE) == []
        stores = runner.memo["stores"]  # type: ignore[index]
        wait_for(lambda: not stores.running(NAMESPACE, "demo"), 15, "the reconcile loop to stop")
    finally:
        runner.stop()


def test_the_operator_works_with_the_charts_rbac_and_owner_reference_enforcement(
    as_service_account: ApiServerThread, kubectl: Kubectl, sim: ClusterSim, config: OperatorConfig
) -> None:
    """Items 3 and 8: with OwnerReferencesPermissionEnforcement (OpenShift), an owner reference
    with blockOwnerDeletion needs update on kvstores/finalizers, which the chart does not grant:
    every child's create would be refused. And the operator lists and watches only its own pods
    and StatefulSets, by label selector, so the server sends it no one else's."""
    server = as_service_account.server
    assert server is not None
    server.owner_references_enforcement = True
    kubectl.create(
        kube.PODS,
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "someone-else", "labels": {"app": "web"}},
            "spec": {"nodeName": "elsewhere", "containers": [{"name": "web", "image": "web"}]},
        },
    )
    runner = OperatorThread(config).start()
    try:
        create_store(kubectl)
        wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available with 3 members")
    finally:
        runner.stop()
    operator_reads = [
        (verb, path, params)
        for user, verb, path, params in server.seen
        if user == OPERATOR_USER and verb in ("list", "watch") and path.endswith(("/pods", "/statefulsets"))
    ]
    assert operator_reads
    watches = [(path, params) for verb, path, params in operator_reads if verb == "watch"]
    assert watches and all(
        params.get("labelSelector") == f"{c.LABEL_MANAGED_BY}={c.MANAGER}" for _, params in watches
    ), watches
    assert all(params.get("labelSelector") for _, _, params in operator_reads), operator_reads


def test_a_name_too_long_for_the_statefulset_is_refused_once_with_a_condition(
    kubectl: Kubectl, sim: ClusterSim, operator: OperatorThread, api: ApiServerThread
) -> None:
    """Item 4: a 53-character StatefulSet name makes the pods' controller-revision-hash label too
    long, so the StatefulSet controller can create no pod. The operator says so in the status and
    creates nothing, instead of failing on every pass."""
    name = "s" * 53
    create_store(kubectl, name)
    body = wait_status(
        kubectl,
        name,
        lambda s: condition({"status": s}, "Available").get("reason") == "InvalidSpec",
        "refused",
    )
    wait_event(kubectl, "InvalidSpec", name=name)
    assert "52" in condition(body, "Available")["message"]
    assert kubectl.get(kube.STATEFULSETS, NAMESPACE, name) is None
    assert kubectl.get(kube.SERVICES, NAMESPACE, name) is None
    assert api.server is not None
    children = ("/statefulsets", "/services", "/configmaps", "/poddisruptionbudgets")
    assert not [seen for seen in api.server.seen if seen[1] == "create" and seen[2].endswith(children)]
    # The name one shorter works, pods included (the sim labels them with the revision hash).
    ok = "s" * 52
    create_store(kubectl, ok)
    wait_status(kubectl, ok, lambda s: is_available(s, 3), "Available with 3 members")
    assert not sim.refused, sim.refused
    # Many passes later: one Warning event, not one per pass.
    assert reasons(kubectl, name=name).count("InvalidSpec") == 1


def test_the_api_server_refuses_what_the_operator_now_refuses_first(
    kubectl: Kubectl, sim: ClusterSim
) -> None:
    """Without the operator's check, the sim's StatefulSet controller gets 422 for every pod of a
    53-character StatefulSet, and the API server 422 for a Service name that is no DNS-1035 label."""
    name = "s" * 53
    kubectl.create(
        kube.STATEFULSETS,
        NAMESPACE,
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "x", "ports": [{"name": "grpc", "containerPort": 1}]}]},
                },
            },
        },
    )
    wait_for(lambda: bool(sim.refused), 10, "the pod create to be refused")
    assert "controller-revision-hash" in sim.refused[0] and "422" in sim.refused[0]
    with pytest.raises(ApiError) as refused:
        kubectl.create(
            kube.SERVICES,
            NAMESPACE,
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "9lives.x"}},
        )
    assert refused.value.status == 422

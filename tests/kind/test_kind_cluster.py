"""What only a real API server, garbage collector and Helm show (issue 15), on the kind cluster:

* store names: a name of 52 characters, the longest the CRD admits, makes a store that comes up
  (its StatefulSet, Services and pods all accept the names derived from it); 53 characters, a dot
  and a leading digit are refused by the API server at once, with the CRD's messages;
* ``helm uninstall`` of a release with a store, in Helm's own order (the operator goes first):
  the KVStore is kept, intact and serving; a new release serves it again, and deleting it then
  removes all its children. With ``store.keepOnUninstall=false`` Helm deletes the KVStore, last,
  and with no operator left anywhere the garbage collector removes all its children;
* ``helm install`` with ``operator.watchNamespaces`` naming a namespace that does not exist fails,
  naming it, and creates nothing.

For the uninstall tests the release of e2e/kind/up.sh (which serves every namespace) is scaled to
zero, so that only the release under test serves the store; it is scaled back afterwards.
Skipped, with a message, wherever the kind suite is (tests/kind/conftest.py).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from e2e.kind import k8s

pytestmark = [pytest.mark.kind, pytest.mark.timeout(1800)]

LONGEST = 52  # charts/kvstore/crds/kvstores.kvstore.dev.yaml: 63 - len("-") - 10 (revision hash)


def small_store(name: str, namespace: str) -> k8s.Body:
    return {
        "apiVersion": "kvstore.dev/v1alpha1",
        "kind": "KVStore",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "replicationFactor": 1,
            "partitions": 16,
            "storage": {"size": "256Mi", "deleteClaimsOnDelete": True},
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        },
    }


@pytest.fixture
def namespace(cluster: str) -> Iterator[k8s.Kubectl]:
    name = f"kv-real-{secrets.token_hex(3)}"
    k8s.run(["kubectl", "--context", cluster, "create", "namespace", name])
    try:
        yield k8s.Kubectl(cluster, name)
    finally:
        k8s.run(["kubectl", "--context", cluster, "delete", "namespace", name, "--wait=false"], check=False)


def children_left(kubectl: k8s.Kubectl, store: str) -> list[str]:
    """The store's objects that still exist (pods included)."""
    left = [
        f"{kind}/{name}"
        for kind, name in (
            ("kvstore", store),
            ("statefulset", store),
            ("service", store),
            ("service", f"{store}-headless"),
            ("configmap", f"{store}-config"),
            ("poddisruptionbudget", store),
        )
        if kubectl.exists(kind, name)
    ]
    pods = kubectl.json("pods", "-l", f"kvstore.dev/store={store}")["items"]
    return left + [f"pod/{p['metadata']['name']}" for p in pods]


def data_claims(kubectl: k8s.Kubectl, store: str) -> list[str]:
    claims = kubectl.json("pvc", "-l", f"kvstore.dev/store={store}")["items"]
    return [c["metadata"]["name"] for c in claims]


def test_a_name_at_the_length_limit_makes_a_working_store(namespace: k8s.Kubectl) -> None:
    name = "s" + "-longname" * 5 + "x" * (LONGEST - 1 - 45)
    assert len(name) == LONGEST
    namespace.apply(small_store(name, namespace.namespace))
    store = k8s.Store(namespace, name)
    k8s.wait_until(lambda: store.healthy(1), 600, f"the {LONGEST}-character store to be Available")
    assert namespace.exists("service", f"{name}-headless")
    revision = store.pod_body(0)["metadata"]["labels"]["controller-revision-hash"]
    assert revision.startswith(f"{name}-") and len(revision) <= 63


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("s" * (LONGEST + 1), "52"),  # metadata.name: Too long: may not be more than 52 bytes
        ("a.b", "DNS-1035 label"),
        ("1st", "DNS-1035 label"),
    ],
)
def test_other_names_are_refused_by_the_api_server(namespace: k8s.Kubectl, name: str, message: str) -> None:
    body = json.dumps(small_store(name, namespace.namespace))
    result = k8s.run_input(
        ["kubectl", "--context", namespace.context, "-n", namespace.namespace, "create", "-f", "-"], body
    )
    assert result.returncode != 0, f"{name!r} was admitted"
    assert message in result.stderr, result.stderr
    assert not namespace.exists("kvstore", name)


@pytest.fixture
def own_operator(cluster: str) -> Iterator[str]:
    """up.sh's operator scaled to zero for the test (so that only the release under test serves its
    namespace); yields the image it runs."""
    image = k8s.operator_image(cluster)
    k8s.scale_operator(cluster, 0)
    try:
        yield image
    finally:
        k8s.scale_operator(cluster, 1)


def install(cluster: str, release: str, kubectl: k8s.Kubectl, image: str, *values: str) -> None:
    repository, tag = image.rsplit(":", 1)
    k8s.helm(
        cluster, "install", release, str(k8s.CHART), "--namespace", kubectl.namespace,
        "--values", str(k8s.KIND_DIR / "values.yaml"),
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", f"operator.watchNamespaces={{{kubectl.namespace}}}",
        "--set", "store.create=true", "--set", "store.replicas=1", "--set", "store.replicationFactor=1",
        "--set", "store.partitions=16", "--set", "store.storage.size=256Mi",
        "--set", "store.storage.deleteClaimsOnDelete=true", "--set", "metrics.dashboard.enabled=false",
        *values, "--wait", "--timeout", "5m",
    )  # fmt: skip


def test_helm_uninstall_keeps_the_store_and_a_new_operator_deletes_it(
    cluster: str, namespace: k8s.Kubectl, own_operator: str
) -> None:
    release = f"keep-{secrets.token_hex(2)}"
    install(cluster, release, namespace, own_operator)
    store = k8s.Store(namespace, "kvstore")
    k8s.wait_until(lambda: store.healthy(1), 600, "the chart's store to be Available")
    k8s.helm(cluster, "uninstall", release, "--namespace", namespace.namespace, "--wait", "--timeout", "5m")
    # Helm deleted the operator first and never the store: it is intact and its node still serves.
    assert not namespace.exists("deployment", f"{release}-kvstore-operator")
    assert namespace.exists("kvstore", "kvstore") and not store.body()["metadata"].get("deletionTimestamp")
    sts = namespace.json("statefulset", "kvstore")
    assert sts["status"].get("readyReplicas") == 1
    # A new release serves it again (adopting the kept KVStore), and deleting it removes everything.
    again = f"again-{secrets.token_hex(2)}"
    install(cluster, again, namespace, own_operator, "--set", "store.create=false")
    k8s.wait_until(lambda: store.healthy(1), 600, "the kept store to be Available under a new operator")
    namespace("delete", "kvstore", "kvstore", "--wait=true", "--timeout=180s", timeout=240)
    k8s.wait_until(lambda: not children_left(namespace, "kvstore"), 300, "the store's children to go")
    k8s.helm(cluster, "uninstall", again, "--namespace", namespace.namespace, "--wait", "--timeout", "5m")


def test_helm_uninstall_deletes_a_store_that_is_not_kept(
    cluster: str, namespace: k8s.Kubectl, own_operator: str
) -> None:
    release = f"drop-{secrets.token_hex(2)}"
    install(cluster, release, namespace, own_operator, "--set", "store.keepOnUninstall=false")
    store = k8s.Store(namespace, "kvstore")
    k8s.wait_until(lambda: store.healthy(1), 600, "the chart's store to be Available")
    annotations = store.body()["metadata"].get("annotations") or {}
    assert "helm.sh/resource-policy" not in annotations, annotations
    assert not store.body()["metadata"].get("finalizers")
    k8s.helm(cluster, "uninstall", release, "--namespace", namespace.namespace, "--wait", "--timeout", "5m")
    # Helm deleted the operator first, then the KVStore; up.sh's operator is scaled to zero, so no
    # operator runs: garbage collection alone removes what the store owned.
    assert not namespace.exists("deployment", f"{release}-kvstore-operator")
    k8s.wait_until(lambda: not children_left(namespace, "kvstore"), 300, "the store and its children to go")
    # install() sets storage.deleteClaimsOnDelete: the StatefulSet's retention policy takes the data
    # volumes along (the chart needs Kubernetes 1.27, where that is on by default).
    k8s.wait_until(lambda: not data_claims(namespace, "kvstore"), 300, "the store's data volumes to go")


def test_a_missing_watched_namespace_fails_the_install_by_name(cluster: str, namespace: k8s.Kubectl) -> None:
    missing = f"kv-missing-{secrets.token_hex(3)}"
    result = k8s.helm(
        cluster, "install", f"ns-{secrets.token_hex(2)}", str(k8s.CHART), "--namespace", namespace.namespace,
        "--set", f"operator.watchNamespaces={{{namespace.namespace},{missing}}}",
        check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert f'"{missing}", which does not exist' in result.stderr, result.stderr
    assert not namespace.json("deployments")["items"]

"""The chart rendered by Helm's own library for several value sets, linted strictly, and every object
validated against the Kubernetes 1.30 and 1.33 OpenAPI schemas (kubernetes-validate --strict)."""

from __future__ import annotations

import copy
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from tests.chart.helpers import CHART, KUBE_VERSIONS, NAMESPACE, VALUE_SETS, Body, crds, render

# Kinds that CRDs define: kubernetes-validate has no schema for them; test_crds.py and
# test_monitoring.py check them against their own schemas.
CUSTOM_KINDS = {"KVStore", "KVBackup", "ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_lint_is_clean_in_strict_mode(value_set: str) -> None:
    for version in KUBE_VERSIONS:
        report = helm.lint(
            str(CHART), VALUE_SETS[value_set], strict=True, namespace=NAMESPACE, kube_version=f"v{version}.0"
        )
        assert report["errors"] == [], report
        # Only INFO findings may remain ("icon is recommended": the chart has no icon URL to give).
        serious = [m for m in report["messages"] if m["severity"] >= 2]
        assert serious == [], serious
        assert {m["error"] for m in report["messages"]} <= {"icon is recommended"}, report


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_object_is_valid_for_kubernetes_1_30_and_1_33(value_set: str) -> None:
    rendered = render(VALUE_SETS[value_set])
    assert rendered.objects
    for obj in rendered.objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                name = f"{obj['kind']} {obj['metadata'].get('name')}"
                pytest.fail(f"{value_set}: {name} invalid for {version}: {exc.message} at {list(exc.path)}")


def test_the_validator_is_strict() -> None:
    """A stray field in a rendered Deployment is refused, so the test above can fail."""
    deployment = copy.deepcopy(render({}).one("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


def test_crds_are_valid_customresourcedefinitions() -> None:
    found = crds()
    assert set(found) == {"KVStore", "KVBackup"}
    for crd in found.values():
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(crd, version, strict=True)


def test_value_sets_render_what_they_switch_on() -> None:
    assert sorted(render({}).kinds()) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",  # the operator's pod: its metrics port only
        "Role",  # leader election, in the release namespace
        "Role",  # the stores of the release namespace (namespaced by default)
        "RoleBinding",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    metrics = render(VALUE_SETS["metrics"]).kinds()
    assert metrics.count("ServiceMonitor") == 2 and "PrometheusRule" in metrics
    assert "KVStore" in render(VALUE_SETS["store"]).kinds()
    backups = render(VALUE_SETS["backups"])
    assert "PersistentVolumeClaim" in backups.kinds()
    everything = render(VALUE_SETS["everything"])
    assert set(everything.kinds()) >= {
        "KVStore",
        "PersistentVolumeClaim",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "Deployment",
        "ClusterRole",
    }
    assert "NetworkPolicy" not in render({"operator": {"networkPolicy": {"enabled": False}}}).kinds()
    no_dashboard = render({"metrics": {"dashboard": {"enabled": False}}})
    assert "ConfigMap" not in no_dashboard.kinds()


def _operator_container(obj: Body) -> Body:
    containers: list[Body] = obj["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_operator_deployment_is_locked_down(value_set: str) -> None:
    deployment = render(VALUE_SETS[value_set]).one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _operator_container(deployment)
    assert deployment["spec"]["replicas"] == 1  # more only when asked: standbys of the leader
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    # The probes hit kopf's liveness endpoint where the operator is told to serve it.
    assert env["KVSTORE_OPERATOR_LIVENESS"] == f"http://0.0.0.0:{ports['health']}/healthz"
    assert env["KVSTORE_OPERATOR_METRICS_LISTEN"] == f"0.0.0.0:{ports['metrics']}"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    # The read-only root needs a writable /tmp (the API client writes credential files there).
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])
    assert (
        pod["serviceAccountName"] == render(VALUE_SETS[value_set]).one("ServiceAccount")["metadata"]["name"]
    )


def test_operator_settings_follow_the_values() -> None:
    everything = render(VALUE_SETS["everything"])
    container = _operator_container(everything.one("Deployment"))
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == "registry.example.com/kvstore:0.1.0"
    assert env["KVSTORE_OPERATOR_NODE_IMAGE"] == "registry.example.com/kvstore:0.1.0"
    assert env["KVSTORE_OPERATOR_TRANSFER_TIMEOUT"] == "2h"
    assert container["args"] == ["--verbose"]
    namespaced = _operator_container(render(VALUE_SETS["namespaced"]).one("Deployment"))
    env = {e["name"]: e.get("value") for e in namespaced["env"]}
    assert env["KVSTORE_OPERATOR_NAMESPACES"] == "kvstore-system,shop"
    default = _operator_container(render({}).one("Deployment"))
    env = {e["name"]: e.get("value") for e in default["env"]}
    assert env["KVSTORE_OPERATOR_NAMESPACES"] == "kvstore-system"  # namespaced by default
    assert default["image"] == env["KVSTORE_OPERATOR_NODE_IMAGE"] == "kvstore:0.1.0"


def test_operator_accepts_the_charts_settings() -> None:
    """Every KVSTORE_OPERATOR_* value the chart sets is one the operator reads and can parse."""
    from kvoperator.config import OperatorConfig, env_names

    for value_set in sorted(VALUE_SETS):
        container = _operator_container(render(VALUE_SETS[value_set]).one("Deployment"))
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        operator_env = {k: v for k, v in env.items() if k.startswith("KVSTORE_OPERATOR_")}
        assert set(operator_env) <= set(env_names()), set(operator_env) - set(env_names())
        OperatorConfig.from_env(operator_env)


def test_the_kvstore_from_values() -> None:
    from kvoperator.spec import parse_store_spec

    store = render(VALUE_SETS["everything"]).one("KVStore")
    assert store["metadata"]["name"] == "orders"
    assert store["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    spec = store["spec"]
    assert spec["replicas"] == 5 and spec["replicationFactor"] == 3
    assert spec["backup"]["volume"]["claimName"] == "orders-backups"
    claim = render(VALUE_SETS["everything"]).one("PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "orders-backups"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    parsed = parse_store_spec(spec)  # the operator's own reading of it
    assert parsed.replicas == 5
    assert parsed.backup is not None and parsed.backup.claim_name == "orders-backups"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"store": {"create": True, "replicas": 2, "replicationFactor": 3}}, "must not exceed"),
        ({"store": {"create": True}, "operator": {"watchNamespaces": ["shop"]}}, "leaves out"),
        (
            {"operator": {"clusterWide": True, "watchNamespaces": ["shop"]}},
            "leave operator.watchNamespaces empty",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(values)


def test_notes_give_next_steps() -> None:
    notes = render({}).notes
    assert "kubectl -n kvstore-system rollout status deployment/kv-kvstore-operator" in notes
    assert (
        "port-forward svc/demo 7000:7000" in notes and "kvctl --endpoints 127.0.0.1:7000 get hello" in notes
    )
    notes = render(VALUE_SETS["everything"]).notes
    assert "wait kvstore/orders --for=condition=Available" in notes
    assert "kubectl -n kvstore-system delete kvstore orders" in notes
    assert "ServiceMonitors" in notes and "PrometheusRule" in notes

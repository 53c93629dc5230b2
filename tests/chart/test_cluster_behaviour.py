"""What the chart does differently on a real cluster than in a plain render: the Prometheus
Operator's API may be missing, watched namespaces may not exist, and the operator's pod shares a
namespace (and maybe a name) with the stores it serves."""

from __future__ import annotations

import re
from pathlib import Path

import helm_python as helm
import pytest
from kvoperator import names

from tests.chart.helpers import NAMESPACE, VALUE_SETS, Body, render

MONITORING = {
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
}


# -- the Prometheus Operator's API -------------------------------------------------------------------


def test_monitoring_objects_need_the_prometheus_operators_api() -> None:
    """Without monitoring.coreos.com/v1 an install would fail with "no matches for kind
    ServiceMonitor": the chart leaves them out and says so."""
    without = render(MONITORING, api_versions=())
    assert not {"ServiceMonitor", "PrometheusRule"} & set(without.kinds())
    assert "WARNING" in without.notes and "monitoring.coreos.com/v1" in without.notes
    assert "helm upgrade" in without.notes
    with_api = render(MONITORING)
    assert with_api.kinds().count("ServiceMonitor") == 2 and "PrometheusRule" in with_api.kinds()
    assert "WARNING" not in with_api.notes
    assert "PrometheusRule kv-kvstore" in with_api.notes


def test_no_warning_when_monitoring_is_off() -> None:
    notes = render({}, api_versions=()).notes
    assert "WARNING" not in notes and "set metrics.serviceMonitor.enabled=true" in notes


# -- watched namespaces that do not exist -----------------------------------------------------------


def with_cluster_namespaces(chart: Path, namespaces: list[str]) -> None:
    """Stand in for the cluster's answer to ``lookup`` (the only part a render cannot ask)."""
    helpers = chart / "templates" / "_helpers.tpl"
    text = helpers.read_text()
    pattern = r'(\{\{- define "kvstore.clusterNamespaces" -\}\}\n).*?(\{\{- end -\}\}\n\n)(?=\{\{/\* Fail)'
    answer = "{" + ",".join(f'"{ns}":true' for ns in namespaces) + "}"
    new, count = re.subn(pattern, lambda m: m.group(1) + answer + "\n" + m.group(2), text, flags=re.DOTALL)
    assert count == 1, "kvstore.clusterNamespaces not found"
    helpers.write_text(new)


NAMESPACED = {"operator": {"watchNamespaces": [NAMESPACE, "shop"]}}


def test_a_missing_watched_namespace_fails_the_install_by_name(chart_copy: Path) -> None:
    with_cluster_namespaces(chart_copy, ["default", "kube-system"])
    with pytest.raises(helm.HelmError, match='namespace "shop", which does not exist'):
        render(NAMESPACED, chart_dir=chart_copy)


def test_existing_watched_namespaces_and_a_new_release_namespace_install(chart_copy: Path) -> None:
    # The release namespace may not exist yet: helm install --create-namespace makes it later.
    with_cluster_namespaces(chart_copy, ["default", "kube-system", "shop"])
    rendered = render(NAMESPACED, chart_dir=chart_copy)
    assert {r["metadata"]["namespace"] for r in rendered.of_kind("Role")} == {NAMESPACE, "shop"}


def test_without_a_cluster_the_namespaces_are_not_checked() -> None:
    """helm template and --dry-run=client: lookup answers nothing, which is no evidence."""
    assert render({"operator": {"watchNamespaces": ["nowhere"]}}).of_kind("Role")


# -- the operator's pod and the stores' selectors ---------------------------------------------------


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_the_operator_pod_never_matches_a_stores_selector(value_set: str) -> None:
    """Released under the name of a store (the README's `kvstore`, the default store.name), the
    operator pod must not join that store's Services and PDB."""
    values = VALUE_SETS[value_set]
    for release in ("kvstore", "kv", "demo"):
        rendered = render(values, name=release)
        pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
        stores = {release, "kvstore", "demo"} | {s["metadata"]["name"] for s in rendered.of_kind("KVStore")}
        for store in stores:
            assert not selects(names.selector_labels(store), pod_labels), (release, store)
            # The selector of StatefulSets made before the component label (if the operator keeps one).
            legacy = getattr(names, "legacy_selector_labels", names.selector_labels)
            assert not selects(legacy(store), pod_labels), (release, store)


def test_pod_labels_cannot_put_the_operator_into_a_store() -> None:
    values: Body = {"operator": {"podLabels": {"app.kubernetes.io/name": "kvstore", "tier": "control"}}}
    deployment = render(values, name="kvstore").one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "kvstore-operator" and labels["tier"] == "control"
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    common = render({"commonLabels": {"app.kubernetes.io/name": "kvstore"}}, name="kvstore")
    labels = common.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "kvstore-operator"


def test_the_operators_service_selects_only_the_operator() -> None:
    rendered = render(VALUE_SETS["store"], name="kvstore")
    service = rendered.one("Service")
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selects(service["spec"]["selector"], pod_labels)
    # The labels the operator puts on a store's pods (kvoperator.names.labels).
    node_labels = names.labels(rendered.one("KVStore")["metadata"]["name"])
    assert not selects(service["spec"]["selector"], node_labels)


# -- real load and real disks -----------------------------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_the_operator_pod_bounds_its_scratch_and_tolerates_slow_probes(value_set: str) -> None:
    """Probes with the 1 s default timeout flap under load; an unbounded emptyDir can fill a node."""
    pod = render(VALUE_SETS[value_set]).one("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["timeoutSeconds"] >= 3, probe
    mounted = {m["name"] for m in container["volumeMounts"]}
    for volume in pod["volumes"]:
        if "emptyDir" in volume and volume["name"] in mounted:
            assert volume["emptyDir"].get("sizeLimit"), volume

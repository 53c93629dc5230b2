"""ServiceMonitors and the PrometheusRule: their structure, that they select what the operator
really creates, and that every alert queries metrics that kvnode or the operator really export."""

from __future__ import annotations

import re

import jsonschema
import pytest

from tests.chart import live
from tests.chart.helpers import NAMESPACE, VALUE_SETS, Body, Rendered, render
from tests.chart.monitoring_schemas import PROMETHEUS_RULE, SERVICE_MONITOR

REQUIRED_ALERTS = {
    "KVStoreNodeDown",
    "KVStoreQuorumAtRisk",
    "KVStoreHintBacklogGrowing",
    "KVStoreBackupStale",
    "KVStoreDiskNearlyFull",
    "KVStoreAntiEntropyStalled",
}


def sanitize(label: str) -> str:
    """A Kubernetes label as Prometheus service discovery names it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def target_labels(rendered: Rendered) -> frozenset[str]:
    """Labels series get at scrape time: Prometheus's own and the ServiceMonitors' relabelings."""
    out = set(live.SCRAPE_LABELS)
    for sm in rendered.of_kind("ServiceMonitor"):
        for endpoint in sm["spec"]["endpoints"]:
            for relabel in endpoint.get("relabelings", []):
                if "targetLabel" in relabel:
                    out.add(relabel["targetLabel"])
    return frozenset(out)


@pytest.fixture(scope="module")
def metrics_render() -> Rendered:
    return render(VALUE_SETS["everything"])


def rules(rendered: Rendered) -> list[Body]:
    rule = rendered.one("PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_structure(metrics_render: Rendered) -> None:
    for value_set in ("metrics", "namespaced", "everything"):
        for sm in render(VALUE_SETS[value_set]).of_kind("ServiceMonitor"):
            jsonschema.validate(sm, SERVICE_MONITOR)
    jsonschema.validate(metrics_render.one("PrometheusRule"), PROMETHEUS_RULE)
    bad = metrics_render.one("PrometheusRule")
    bad = {**bad, "spec": {"groups": [{"name": "x", "rules": [{"alert": "A", "expr": "up", "fore": "5m"}]}]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, PROMETHEUS_RULE)


def test_node_servicemonitor_selects_the_operators_headless_service(metrics_render: Rendered) -> None:
    from kvoperator.builders.services import build_client_service, build_headless_service
    from kvoperator.spec import parse_store_spec

    store = metrics_render.one("KVStore")
    owner = {**store, "metadata": {**store["metadata"], "uid": "u-1"}}
    spec = parse_store_spec(store["spec"])
    headless = build_headless_service(owner, spec)
    client = build_client_service(owner, spec)
    sm = metrics_render.one("ServiceMonitor", "kv-kvstore-nodes")
    selector = sm["spec"]["selector"]["matchLabels"]

    def selects(service: Body) -> bool:
        labels = service["metadata"]["labels"]
        return all(labels.get(k) == v for k, v in selector.items())

    assert selects(headless) and not selects(client)
    ports = {p["name"]: p["port"] for p in headless["spec"]["ports"]}
    endpoint = sm["spec"]["endpoints"][0]
    assert ports[endpoint["port"]] == spec.metrics_port
    relabel = endpoint["relabelings"][0]
    assert relabel["targetLabel"] == "store"
    (source,) = relabel["sourceLabels"]
    store_label = next(
        k
        for k, v in headless["metadata"]["labels"].items()
        if v == store["metadata"]["name"] and k.endswith("/store")
    )
    assert source == "__meta_kubernetes_service_label_" + sanitize(store_label)
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["kvstore-system"]}  # namespaced by default
    # a store has TLS by default, and its metrics port then serves HTTPS only
    assert spec.tls.enabled and endpoint["scheme"] == "https"
    cluster_wide = {**VALUE_SETS["metrics"], "operator": {"clusterWide": True}}
    everywhere = render(cluster_wide).one("ServiceMonitor", "kv-kvstore-nodes")
    assert everywhere["spec"]["namespaceSelector"] == {"any": True}
    plaintext = {"metrics": {"serviceMonitor": {"enabled": True, "nodeTLS": False}}}
    assert (
        render(plaintext).one("ServiceMonitor", "kv-kvstore-nodes")["spec"]["endpoints"][0]["scheme"]
        == "http"
    )
    namespaced = render(VALUE_SETS["namespaced"]).one("ServiceMonitor", "kv-kvstore-nodes")
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["kvstore-system", "shop"]}
    assert sm["metadata"]["labels"]["release"] == "prometheus"


def test_operator_servicemonitor_selects_the_operator_service(metrics_render: Rendered) -> None:
    sm = metrics_render.one("ServiceMonitor", "kv-kvstore-operator")
    service = metrics_render.one("Service", "kv-kvstore-operator")
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    endpoint = sm["spec"]["endpoints"][0]
    assert endpoint["honorLabels"] is True  # the operator's namespace/store labels name the store
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    pod_labels = metrics_render.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())


def test_alerts_are_there_and_can_be_switched_off(metrics_render: Rendered) -> None:
    names = [r["alert"] for r in rules(metrics_render)]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS
    for rule in rules(metrics_render):
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["labels"]["team"] == "storage"  # alertLabels
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    off = ["KVStoreBackupStale", "KVStoreDegraded"]
    fewer = render({"metrics": {"prometheusRule": {"enabled": True, "disabled": off}}})
    left = {r["alert"] for r in rules(fewer)}
    assert left == set(names) - {"KVStoreBackupStale", "KVStoreDegraded"}
    tuned = render(
        {
            "metrics": {
                "prometheusRule": {
                    "enabled": True,
                    "thresholds": {"antiEntropyStalledFor": "3h", "backupMaxAgeSeconds": 7200},
                }
            }
        }
    )
    exprs = {r["alert"]: r["expr"] for r in rules(tuned)}
    assert "[3h]" in exprs["KVStoreAntiEntropyStalled"]
    assert exprs["KVStoreBackupStale"].endswith("> 7200")


def test_alerts_query_only_metrics_that_are_exported(
    metrics_render: Rendered, exported: live.Exported
) -> None:
    labels = target_labels(metrics_render)
    problems: list[str] = []
    for rule in rules(metrics_render):
        check = live.check_expr(rule["expr"], exported, labels)
        assert check.metrics, f"{rule['alert']} queries no metric"
        problems += [f"{rule['alert']}: {p}" for p in check.problems]
    assert problems == []

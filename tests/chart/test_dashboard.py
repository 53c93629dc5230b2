"""The Grafana dashboard: it loads, its layout is sound, it has the panels the issue asks for, and
every metric a panel (or a template variable) queries is one that kvnode or the operator really
exports, checked against live /metrics scrapes (tests/chart/live.py), never a hand-kept list."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.chart import live
from tests.chart.helpers import CHART, VALUE_SETS, Body, Rendered, dashboard, render
from tests.chart.test_monitoring import target_labels

DASHBOARD = dashboard()
PANELS: list[Body] = [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = []
    for panel in PANELS:
        for target in panel["targets"]:
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for var in DASHBOARD["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = re.fullmatch(r"label_values\((.+),\s*([a-zA-Z_]+)\)", query)
            assert match, f"variable {var['name']}: unexpected query {query!r}"
            out.append((f"variable {var['name']}", match.group(1)))
    return out


def test_it_is_a_grafana_dashboard() -> None:
    assert DASHBOARD["title"] == "kvstore" and DASHBOARD["uid"]
    assert isinstance(DASHBOARD["schemaVersion"], int)
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    for panel in DASHBOARD["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
    for panel in PANELS:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]


def test_panels_never_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in DASHBOARD["panels"]:
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize(
    ("subject", "pattern"),
    [
        (
            "requests per RPC and consistency level",
            r"by \(method, consistency\) \(rate\(kvnode_requests_total",
        ),
        ("latency per RPC and consistency level", r"kvnode_request_duration_seconds_bucket"),
        ("errors", r'kvnode_requests_total\{[^}]*code!="OK"'),
        ("replication RPCs", r"kvnode_replica_rpcs_total"),
        ("hint backlog", r"kvnode_hints_pending"),
        ("anti-entropy repairs", r"kvnode_anti_entropy_repairs_total"),
        ("LMDB used", r"kvnode_lmdb_used_bytes"),
        ("LMDB map size", r"kvnode_lmdb_map_size_bytes"),
        ("keys per node", r"kvnode_keys"),
        ("membership epoch", r"kvnode_membership_epoch"),
        ("backup age", r"time\(\) - .*kvstore_operator_last_backup_timestamp_seconds"),
        ("operator reconciles", r"kvstore_operator_reconciles_total"),
        ("operator repairs", r"kvstore_operator_pod_repairs_total"),
    ],
)
def test_the_panels_the_issue_asks_for(subject: str, pattern: str) -> None:
    assert any(re.search(pattern, expr) for _, expr in queries()), f"no panel shows {subject}"


def test_every_query_uses_only_exported_metrics_and_labels(exported: live.Exported) -> None:
    labels = target_labels(render(VALUE_SETS["everything"]))
    problems: list[str] = []
    unverified: dict[str, set[str]] = {}
    used: set[str] = set()
    for where, expr in queries():
        check = live.check_expr(expr, exported, labels)
        assert check.metrics, f"{where} queries no metric"
        used |= check.metrics
        problems += [f"{where}: {p}" for p in check.problems]
        for name, names in check.unverified_labels.items():
            unverified.setdefault(name, set()).update(names)
    assert problems == []
    # Every node metric the dashboard uses had samples in the scrape, so its labels were checked;
    # only operator metrics that a short run cannot produce (backups, repairs, ...) are checked by
    # name alone, and those are filtered on no label of their own.
    assert not [m for m in unverified if m.startswith("kvnode_")], unverified
    assert all(not names for names in unverified.values()), unverified
    kvnode_families = {m for m in exported.types if m.startswith("kvnode_")}
    assert len(used & kvnode_families) >= 30, sorted(kvnode_families - used)


def test_the_operator_serves_its_liveness_endpoint(operator_run: tuple[live.Exported, int]) -> None:
    """The endpoint the chart's probes use, served by the operator started with the chart's env."""
    assert operator_run[1] == 200


def test_the_configmap_carries_the_dashboard_for_the_sidecar(default_render: Rendered) -> None:
    cm = default_render.one("ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    embedded: Any = json.loads(cm["data"]["kvstore.json"])
    assert embedded == DASHBOARD
    other = render(VALUE_SETS["everything"]).one("ConfigMap")
    assert other["metadata"]["namespace"] == "monitoring"
    assert other["metadata"]["annotations"] == {"grafana_folder": "Databases"}
    assert json.loads((CHART / "dashboards" / "kvstore.json").read_text()) == DASHBOARD

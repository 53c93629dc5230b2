"""The dashboard and the alerts against a real Prometheus (Debian's ``prometheus`` package; .ci/run
installs it; without it these tests are skipped, saying so).

A local 3-node kvnode cluster with metrics on, and the real operator (the chart's environment,
against the kmock API server, reconciling one KVStore) are scraped every second by a ``prometheus``
process, with the labels the chart's ServiceMonitors give them in a cluster: ``namespace`` and
``pod`` from service discovery, ``store`` from the nodes' relabeling, the operator's own labels kept
(``honorLabels``). Load runs on the nodes the whole time (every RPC at every consistency level
through the raw stubs, one refused request, puts and gets through ``AsyncKVClient``).

Then every dashboard query, with Grafana's variables replaced as Grafana would, goes to
``/api/v1/query``: Prometheus must accept it, and it must return data, except the few listed in
NO_DATA_HERE, each with the reason this setup cannot produce it. Every alert expression of the
rendered PrometheusRule must be accepted too (promtool's unit tests in test_promtool.py make each
one fire).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnode.api.v1 import types_pb2
from kvnode.cli.local_cluster import bootstrap
from kvnode.client.aio import AsyncKVClient
from kvnode.testing.processes import ProcessCluster, wait_for
from tests.chart import live
from tests.chart.helpers import VALUE_SETS, Rendered, render
from tests.chart.prometheus_server import BINARY, Prometheus, QueryError, Target
from tests.chart.test_dashboard import DASHBOARD, queries
from tests.chart.test_monitoring import rules

pytestmark = pytest.mark.skipif(
    BINARY is None, reason="prometheus not installed (Debian package prometheus; .ci/run installs it)"
)

NAMESPACE, STORE = "dash", "dash"
OPERATOR_NAMESPACE = "kvstore-system"
# What Grafana puts in for the dashboard's variables here: one namespace and store (as a user picks
# them), every pod (the variable's allValue), and intervals that span several 1 s scrapes.
VARIABLES = {
    "namespace": NAMESPACE,
    "store": STORE,
    "pod": ".*",
    "__rate_interval": "15s",
    "__interval": "15s",
    "__range": "1m",
}

# Queries that must be valid but cannot return data here, each with the reason. Keyed by a
# metric the query uses; kept short: everything else must return data.
NO_DATA_HERE = {
    "kvstore_operator_last_backup_timestamp_seconds": "the operator only sets it after a verified "
    "KVBackup, and kmock runs no backup Job",
    "kvstore_operator_backup_duration_seconds_bucket": "no KVBackup runs against kmock",
    "kvstore_operator_backups_total": "no KVBackup runs against kmock",
    "kvstore_operator_restores_total": "no restore runs against kmock",
    "kvstore_operator_backups_pruned_total": "no KVBackup runs against kmock",
    "kvstore_operator_pod_repairs_total": "kmock has no kubelet: no pod ever fails",
    "kvstore_operator_reconcile_errors_total": "a healthy reconcile has no errors",
    "kvstore_operator_membership_change_failures_total": "no membership change fails here",
    "kvstore_operator_membership_changes_total": "kmock runs no pods: no member ever joins",
    "kvstore_operator_scale_down_refusals_total": "the store is never scaled down here",
    "kvnode_transfer_records_total": "no node joins, leaves or rebuilds",
}


def substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in VARIABLES, f"no value for the dashboard variable ${name}"
        return VARIABLES[name]

    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", value, expr)


def _load(endpoints: list[str], stop: threading.Event, errors: list[BaseException]) -> None:
    """Requests until ``stop``: every RPC at every level on each node in turn (live.py's driver,
    which also sends one refused request), and puts and gets through the client."""

    async def run() -> None:
        client = AsyncKVClient(endpoints, timeout=5.0)
        try:
            round_ = 0
            while not stop.is_set():
                await live._drive_requests(endpoints[round_ % len(endpoints)])
                for i in range(20):
                    key = f"load/{round_ % 5}/{i}"
                    await client.put(key, f"v{round_}", consistency="QUORUM")
                    assert await client.get(key, consistency="QUORUM") is not None
                round_ += 1
                await asyncio.sleep(0.05)
        finally:
            await client.close()

    try:
        asyncio.run(run())
    except BaseException as exc:  # noqa: BLE001 - handed to the test, which fails with it
        errors.append(exc)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, default_render: Rendered) -> Iterator[Prometheus]:
    root: Path = tmp_path_factory.mktemp("prometheus")
    deployment = default_render.one("Deployment")
    env: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    with (
        ProcessCluster(
            root / "nodes", 3, partitions=16, metrics=True, extra_args=["--hint-max-bytes", "600"]
        ) as cluster,
        # Its shutdown is not under test here (kopf may wait out a daemon's cancellation
        # timeout): a few seconds, then SIGKILL.
        live.running_operator(root / "operator", env, NAMESPACE, STORE, stop_within=5) as operator,
    ):
        cluster.start()
        asyncio.run(bootstrap(cluster.endpoints))
        for node in cluster.nodes:  # a backup on every node: the nodes' backup-age panel has data
            live._backup(node.address, root / "backups" / node.node_id)
        # A node down while writes go on, as live.py does: with a tiny hint bound some writes
        # become hints and the rest are dropped; back up, the hints are replayed and anti-entropy
        # repairs the rest. The hint and repair panels have data from then on.
        cluster.kill(2)
        asyncio.run(live._write_many(cluster[0].address, "prom/down", 40, types_pb2.CONSISTENCY_QUORUM))
        cluster.start(2)
        wait_for(
            lambda: all(cluster.status(i).hints_pending == 0 for i in range(3)),
            30,
            "the hints for the restarted node to be replayed",
        )
        for i in range(3):
            cluster.anti_entropy(i)
        targets = [
            Target(
                "kvstore-nodes",
                node.metrics_address,
                {"namespace": NAMESPACE, "store": STORE, "pod": f"{STORE}-{i}", "service": STORE},
            )
            for i, node in enumerate(cluster.nodes)
        ]
        targets.append(
            Target(
                "kvstore-operator",
                operator.metrics,
                {"namespace": OPERATOR_NAMESPACE, "pod": "kvstore-operator-0"},
                honor_labels=True,
            )
        )
        stop = threading.Event()
        errors: list[BaseException] = []
        load = threading.Thread(target=_load, args=(cluster.endpoints, stop, errors), daemon=True)
        started = time.time()
        load.start()
        try:
            with Prometheus(root / "prometheus", targets) as server:
                server.wait_scraped(since=started, scrapes=4)
                # rate() over 15 s needs two samples after a series' first request.
                server.wait_scraped(since=time.time() - 1, scrapes=3)
                assert not errors, errors
                yield server
        finally:
            stop.set()
            load.join(timeout=30)
        assert not errors, errors


def test_every_target_is_up(prometheus: Prometheus) -> None:
    up = prometheus.query("up")
    assert sorted((s["metric"]["job"], s["value"][1]) for s in up) == [
        ("kvstore-nodes", "1"),
        ("kvstore-nodes", "1"),
        ("kvstore-nodes", "1"),
        ("kvstore-operator", "1"),
    ]


def test_the_variables_list_the_store(prometheus: Prometheus) -> None:
    """label_values(...) as Grafana fills the variables: through /api/v1/series."""
    for var in DASHBOARD["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*([a-zA-Z_]+)\)", var["query"]["query"])
        assert match
        body = prometheus.api("series", {"match[]": substitute(match.group(1))})
        assert body["status"] == "success", body
        values = {s.get(match.group(2)) for s in body["data"]}
        expected = {"namespace": {NAMESPACE}, "store": {STORE}, "pod": {f"{STORE}-{i}" for i in range(3)}}
        assert values == expected[var["name"]], var["name"]


@pytest.mark.parametrize(("where", "expr"), [q for q in queries() if q[0].startswith("panel ")])
def test_every_dashboard_query_is_valid_and_returns_data(
    prometheus: Prometheus, where: str, expr: str
) -> None:
    try:
        result = prometheus.query(substitute(expr))
    except QueryError as exc:
        pytest.fail(f"{where}: Prometheus refused the query: {exc}")
    missing = sorted(m for m in NO_DATA_HERE if re.search(rf"\b{re.escape(m)}\b", expr))
    if missing:
        return  # valid; NO_DATA_HERE says why it has no data here
    assert result, f"{where}: no data for {substitute(expr)!r}"


# Listed above, but a run may still produce a sample (a transient conflict with kmock is counted).
MAY_HAVE_DATA = {"kvstore_operator_reconcile_errors_total"}


def test_no_data_here_is_still_true(prometheus: Prometheus) -> None:
    """A metric listed in NO_DATA_HERE that has data now belongs in the checked queries."""
    stale = [m for m in NO_DATA_HERE if m not in MAY_HAVE_DATA and prometheus.query(m)]
    assert stale == [], f"these have data now; remove them from NO_DATA_HERE: {stale}"


def test_every_alert_expression_is_valid(prometheus: Prometheus) -> None:
    alerts = rules(render(VALUE_SETS["everything"]))
    assert alerts
    for rule in alerts:
        try:
            prometheus.query(rule["expr"])
        except QueryError as exc:
            pytest.fail(f"{rule['alert']}: Prometheus refused its expression: {exc}")

"""What the nodes and the operator really export: live /metrics scrapes, never a hand-kept list.

* Nodes: a real 3-node cluster (kvnode processes with metrics on) is driven through every kind of
  request at every consistency level, a request that fails, backups, a node that is down while
  writes go on (hints stored, some dropped over a tiny hint bound), its return (hints replayed,
  anti-entropy repairs) and a node that lost its volume (a rebuild transfer). Every node is scraped
  at several points and the scrapes are merged.
* Operator: the real ``kvstore-operator`` process, with the environment the chart's Deployment
  gives it, against the kmock API server of the operator's tests, reconciling one KVStore. Its
  liveness endpoint is checked on the way (the chart's probes use it).

An exported series name is known from the ``# TYPE`` lines (so a labelled metric that has no
sample yet is still known by name); its label names are known from its samples, where it has any.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from kvnode.api.v1 import admin_pb2, admin_pb2_grpc, kv_pb2, kv_pb2_grpc, types_pb2
from kvnode.cli.local_cluster import bootstrap
from kvnode.testing.processes import ProcessCluster, free_port, wait_for

LEVELS = {
    "ONE": types_pb2.CONSISTENCY_ONE,
    "QUORUM": types_pb2.CONSISTENCY_QUORUM,
    "ALL": types_pb2.CONSISTENCY_ALL,
    "LINEARIZABLE": types_pb2.CONSISTENCY_LINEARIZABLE,
}
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}


@dataclass
class Exported:
    """Series names (as PromQL sees them) and, for those with samples, their label names."""

    types: dict[str, str] = field(default_factory=dict)  # series name -> family type
    labels: dict[str, set[str]] = field(default_factory=dict)  # series name -> label names seen

    def add_page(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            for suffix in SUFFIXES.get(family.type, ("",)):
                name = family.name + suffix
                if family.type == "info" and family.name.endswith("_info"):
                    name = family.name
                self.types.setdefault(name, family.type)
            for sample in family.samples:
                self.types.setdefault(sample.name, family.type)
                self.labels.setdefault(sample.name, set()).update(sample.labels)

    def merge(self, other: Exported) -> Exported:
        out = Exported(dict(self.types), {k: set(v) for k, v in self.labels.items()})
        for name, kind in other.types.items():
            out.types.setdefault(name, kind)
        for name, labels in other.labels.items():
            out.labels.setdefault(name, set()).update(labels)
        return out


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text


# -- nodes ---------------------------------------------------------------------------------------


async def _retrying(method: Callable[..., Awaitable[object]], request: object) -> None:
    """One call, tried again while it is UNAVAILABLE: an ALL write right after start-up can find a
    peer link still in its connect back-off. Metrics only need the call to happen (a failed try is
    counted too)."""
    for attempt in range(20):
        try:
            await method(request)
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 19:
                raise
            await asyncio.sleep(0.1)


async def _drive_requests(endpoint: str) -> None:
    """Every client RPC at every level, and one that fails (an empty key is INVALID_ARGUMENT)."""
    async with grpc.aio.insecure_channel(endpoint) as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        for name, level in LEVELS.items():
            key = f"dash/{name}".encode()
            await _retrying(kv.Put, kv_pb2.PutRequest(key=key, value=b"v", consistency=level))
            await _retrying(kv.Get, kv_pb2.GetRequest(key=key, consistency=level))
            await _retrying(kv.Delete, kv_pb2.DeleteRequest(key=key, consistency=level))
            if name == "LINEARIZABLE":
                continue  # single-key operations only
            mutations = [kv_pb2.Mutation(key=key + b"/%d" % i, value=b"v") for i in range(3)]
            await _retrying(kv.BatchWrite, kv_pb2.BatchWriteRequest(mutations=mutations, consistency=level))
            keys = [key + b"/0", key + b"/1"]
            await _retrying(kv.BatchGet, kv_pb2.BatchGetRequest(keys=keys, consistency=level))
            await _retrying(kv.Scan, kv_pb2.ScanRequest(prefix=b"dash/", limit=10, consistency=level))
        try:
            await kv.Put(kv_pb2.PutRequest(key=b"", value=b"v"))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        else:
            raise AssertionError("a put with an empty key succeeded")


async def _write_many(endpoint: str, prefix: str, count: int, level: types_pb2.Consistency.ValueType) -> None:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        for i in range(count):
            request = kv_pb2.PutRequest(key=f"{prefix}/{i}".encode(), value=b"x" * 64, consistency=level)
            await _retrying(kv.Put, request)


def _backup(endpoint: str, directory: Path) -> None:
    with grpc.insecure_channel(endpoint) as channel:
        admin_pb2_grpc.AdminStub(channel).Backup(
            admin_pb2.BackupRequest(directory=str(directory), backup_id="dash-1"), timeout=60
        )


def node_metrics(root: Path) -> Exported:
    exported = Exported()
    # A tiny hint bound: while kv-2 is down, a few writes become hints and the rest are dropped,
    # which anti-entropy then repairs.
    with ProcessCluster(
        root / "nodes", 3, partitions=16, metrics=True, extra_args=["--hint-max-bytes", "600"]
    ) as cluster:

        def scrape_all() -> None:
            for node in cluster.nodes:
                if node.running:
                    exported.add_page(scrape(node.metrics_address))

        cluster.start()
        asyncio.run(bootstrap(cluster.endpoints))
        for node in cluster.nodes:
            asyncio.run(_drive_requests(node.address))
        backups = root / "backups"
        for node in cluster.nodes:
            _backup(node.address, backups / node.node_id)
        scrape_all()

        cluster.kill(2)
        asyncio.run(_write_many(cluster[0].address, "dash/down", 40, types_pb2.CONSISTENCY_QUORUM))
        scrape_all()  # hints pending for kv-2, some dropped
        cluster.start(2)

        def drained() -> bool:
            return all(cluster.status(i).hints_pending == 0 for i in range(3))

        wait_for(drained, 30, "the hints for kv-2 to be replayed")
        for i in range(3):
            cluster.anti_entropy(i)
        scrape_all()  # replayed hints, anti-entropy repairs

        cluster.kill(1)
        shutil.rmtree(cluster[1].data_dir)
        cluster.start(1)  # rebuilds from its peers before it serves
        scrape_all()
    return exported


# -- operator ------------------------------------------------------------------------------------


@contextmanager
def _api_server(root: Path) -> Iterator[tuple[str, Path]]:
    from tests.operator.apiserver import ApiServerThread

    server = ApiServerThread().start()
    try:
        yield server.url, server.write_kubeconfig(root / "kubeconfig")
    finally:
        server.stop()


def operator_env(deployment_env: Sequence[Mapping[str, Any]], metrics: str, health: str) -> dict[str, str]:
    """The operator's environment as the chart's Deployment sets it, with the two listen addresses
    moved to free local ports."""
    env = {e["name"]: e["value"] for e in deployment_env if "value" in e}
    env["KVSTORE_OPERATOR_METRICS_LISTEN"] = metrics
    env["KVSTORE_OPERATOR_LIVENESS"] = f"http://{health}/healthz"
    env["KVSTORE_OPERATOR_CONNECT_TIMEOUT"] = "10s"
    return env


# Starts the operator with (settings, kubeconfig path, log file) and returns its process; the
# default runs ``python -m kvoperator`` here, tests/image runs the image's ``kvstore-operator``.
Launcher = Callable[[dict[str, str], Path, IO[bytes]], "subprocess.Popen[bytes]"]


def local_operator(settings: dict[str, str], kubeconfig: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), **settings}
    return subprocess.Popen(
        [sys.executable, "-m", "kvoperator"], env=env, stdout=log, stderr=subprocess.STDOUT
    )


@dataclass(frozen=True)
class RunningOperator:
    metrics: str
    health: str
    first_page: str
    """The first metrics page that showed the store reconciled."""


@contextmanager
def running_operator(
    root: Path,
    deployment_env: Sequence[Mapping[str, Any]],
    namespace: str = "dash",
    store: str = "dash",
    *,
    launcher: Launcher = local_operator,
    stop_within: float = 30.0,
) -> Iterator[RunningOperator]:
    """The operator, started as the chart's Deployment starts it, against kmock with one KVStore
    ``namespace/store``; yields once it has reconciled the store. On exit it is sent SIGTERM, and
    SIGKILL after ``stop_within`` seconds."""
    from tests.operator.kubectl import Kubectl

    root.mkdir(parents=True, exist_ok=True)
    metrics = f"127.0.0.1:{free_port()}"
    health = f"127.0.0.1:{free_port()}"
    with _api_server(root) as (url, kubeconfig):
        kubectl = Kubectl(url)
        kubectl.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        kubectl.request(
            "POST",
            f"/apis/kvstore.dev/v1alpha1/namespaces/{namespace}/kvstores",
            {
                "apiVersion": "kvstore.dev/v1alpha1",
                "kind": "KVStore",
                "metadata": {"name": store, "namespace": namespace},
                "spec": {"replicas": 3, "replicationFactor": 3},
            },
        )
        log_path = root / "operator.log"
        settings = operator_env(deployment_env, metrics, health)
        if settings.get("KVSTORE_OPERATOR_NAMESPACES"):
            # The chart serves its release namespace by default: as if installed in the store's.
            settings["KVSTORE_OPERATOR_NAMESPACES"] = namespace
        with log_path.open("wb") as log:
            process = launcher(settings, kubeconfig, log)
        try:
            pages: list[str] = []

            def reconciled() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"the operator exited:\n{log_path.read_text()[-3000:]}")
                try:
                    page = scrape(metrics)
                except OSError:
                    return False
                if f'kvstore_operator_reconciles_total{{namespace="{namespace}"' not in page:
                    return False
                pages.append(page)
                return True

            try:
                wait_for(reconciled, 90, "the operator to reconcile the KVStore", interval=0.2)
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}\n{log_path.read_text()[-3000:]}") from None
            yield RunningOperator(metrics, health, pages[-1])
        finally:
            process.terminate()
            try:
                process.wait(timeout=stop_within)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def operator_metrics(
    root: Path, deployment_env: Sequence[Mapping[str, Any]], launcher: Launcher = local_operator
) -> tuple[Exported, int]:
    """Run the operator against kmock with one KVStore; return its metrics and the liveness
    endpoint's HTTP status."""
    with running_operator(root, deployment_env, launcher=launcher) as operator:
        exported = Exported()
        exported.add_page(operator.first_page)
        with urllib.request.urlopen(f"http://{operator.health}/healthz", timeout=10) as response:
            return exported, int(response.status)


# -- checking an expression against what is exported -----------------------------------------------

# Labels that Prometheus (through a ServiceMonitor) adds to every scraped series: the target's.
# `store` is added by the nodes' ServiceMonitor's relabeling; the tests read that from the chart.
SCRAPE_LABELS = frozenset({"namespace", "pod", "service", "endpoint", "container", "job", "instance"})


@dataclass
class ExprCheck:
    metrics: set[str]
    problems: list[str]
    unverified_labels: dict[str, set[str]]  # metric without samples -> labels it is filtered on


def check_expr(expr: str, exported: Exported, target_labels: frozenset[str]) -> ExprCheck:
    from tests.chart.promql import parse

    parsed = parse(expr)
    problems: list[str] = []
    unverified: dict[str, set[str]] = {}
    seen_labels: set[str] = set(target_labels)
    for selector in parsed.selectors:
        name = selector.metric
        if name not in exported.types:
            problems.append(f"{name} is not exported by kvnode or the operator")
            continue
        if name not in exported.labels:
            unverified.setdefault(name, set()).update(set(selector.labels) - target_labels)
            continue
        have = exported.labels[name] | target_labels
        seen_labels |= exported.labels[name]
        for label in selector.labels:
            if label not in have:
                problems.append(f"{name} has no label {label!r} (it has {sorted(exported.labels[name])})")
    if not unverified:
        for label in parsed.grouping_labels - seen_labels:
            problems.append(f"no series in the expression has the label {label!r} it groups by")
    return ExprCheck(parsed.metrics, problems, unverified)

"""What a real cluster adds (issue 15), on the kind cluster:

* **namespace deletion in namespaced mode**: a release in its own namespace watches one other
  namespace, which holds a store; deleting that namespace (its Role and RoleBinding for the
  operator go with it) must finish: the namespace is gone, nothing left Terminating;
* **two operator replicas with leader election** (``operator.replicas=2``): exactly one holds the
  release's Lease (coordination.k8s.io, named by the chart's ``KVSTORE_OPERATOR_LEASE_NAME``) and
  acts; the store becomes Available; the leader's pod is deleted and the other replica takes the
  Lease over, and a scale of the store still completes;
* **a node drain under load, with the PDB**: a 3-replica store takes QUORUM writes while
  ``kubectl drain`` empties the kind worker holding most of its pods; the pods are watched the whole
  time, and at most ``maxUnavailable`` (1) of them is ever not Ready; every acknowledged write is
  readable afterwards. The node is uncordoned afterwards, whatever happened.

The first two scale e2e/kind/up.sh's operator (which serves every namespace) to zero, so that only
the release under test serves the store; it is scaled back afterwards. Skipped, with a message,
wherever the kind suite is (tests/kind/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from e2e.kind import k8s
from kvnode.api.v1 import types_pb2
from kvnode.client.aio import AsyncKVClient
from kvnode.testing.processes import free_port
from tests.kind.test_kind import wait_serving
from tests.kind.test_kind_cluster import install, own_operator, small_store  # noqa: F401 - a fixture
from tests.operator.helpers import missing_keys

pytestmark = [pytest.mark.kind, pytest.mark.timeout(1800)]


def create_namespace(context: str, prefix: str) -> k8s.Kubectl:
    name = f"{prefix}-{secrets.token_hex(3)}"
    k8s.run(["kubectl", "--context", context, "create", "namespace", name])
    return k8s.Kubectl(context, name)


def delete_namespace(kubectl: k8s.Kubectl) -> None:
    k8s.run(["kubectl", "--context", kubectl.context, "delete", "namespace", kubectl.namespace,
             "--wait=false", "--ignore-not-found"], check=False)  # fmt: skip


def namespace_phase(context: str, name: str) -> str | None:
    """The namespace's phase (Active, Terminating), or None once it is gone."""
    out = k8s.run(["kubectl", "--context", context, "get", "namespace", name, "--ignore-not-found",
                   "-o", "json"]).stdout.strip()  # fmt: skip
    if not out:
        return None
    phase: str = json.loads(out)["status"].get("phase", "")
    return phase


def why_terminating(context: str, name: str) -> str:
    """What keeps a namespace: its conditions and the KVStores left in it with their finalizers."""
    out = k8s.run(
        ["kubectl", "--context", context, "get", "namespace", name, "-o", "json"], check=False
    ).stdout
    conditions = json.loads(out)["status"].get("conditions", []) if out.strip() else []
    stores = k8s.run(["kubectl", "--context", context, "-n", name, "get", "kvstores", "-o", "json"],
                     check=False).stdout  # fmt: skip
    left = [
        (s["metadata"]["name"], s["metadata"].get("finalizers"))
        for s in (json.loads(stores)["items"] if stores.strip() else [])
    ]
    return f"conditions: {[(c['type'], c.get('message')) for c in conditions]}; KVStores left: {left}"


def operator_deployment(kubectl: k8s.Kubectl, release: str) -> k8s.Body:
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
    items: list[k8s.Body] = kubectl.json("deployments", "-l", selector)["items"]
    assert len(items) == 1, [d["metadata"]["name"] for d in items]
    return items[0]


# -- namespace deletion in namespaced mode ---------------------------------------------------------


def test_deleting_a_watched_namespace_with_a_store_finishes(cluster: str, own_operator: str) -> None:  # noqa: F811
    home = create_namespace(cluster, "kv-op")
    watched = create_namespace(cluster, "kv-watched")
    release = f"ns-{secrets.token_hex(2)}"
    repository, tag = own_operator.rsplit(":", 1)
    try:
        k8s.helm(
            cluster, "install", release, str(k8s.CHART), "--namespace", home.namespace,
            "--values", str(k8s.KIND_DIR / "values.yaml"),
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
            "--set", f"operator.watchNamespaces={{{watched.namespace}}}",
            "--set", "store.create=false", "--set", "metrics.dashboard.enabled=false",
            "--wait", "--timeout", "5m",
        )  # fmt: skip
        # The operator's Role and RoleBinding live in the watched namespace (charts' rbac.yaml).
        assert watched.json("rolebindings")["items"], (
            "no RoleBinding for the operator in the watched namespace"
        )
        watched.apply(small_store("doomed", watched.namespace))
        store = k8s.Store(watched, "doomed")
        k8s.wait_until(lambda: store.healthy(1), 600, "the store in the watched namespace to be Available")

        k8s.run(["kubectl", "--context", cluster, "delete", "namespace", watched.namespace, "--wait=false"])
        try:
            k8s.wait_until(
                lambda: namespace_phase(cluster, watched.namespace) is None,
                300,
                f"namespace {watched.namespace} to be gone",
                interval=2.0,
            )
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {why_terminating(cluster, watched.namespace)}") from None
        # The operator lived through it: still Available in its own namespace.
        deployment = operator_deployment(home, release)
        assert deployment["status"].get("availableReplicas") == 1, deployment["status"]
    finally:
        k8s.helm(cluster, "uninstall", release, "--namespace", home.namespace, "--wait", "--timeout", "5m",
                 check=False)  # fmt: skip
        delete_namespace(watched)
        delete_namespace(home)


# -- two operator replicas with leader election ----------------------------------------------------


def lease_holder(kubectl: k8s.Kubectl, lease: str) -> str:
    """The pod that holds the Lease ("" when no one does): identities are ``<pod>_<random>``
    (operator/kvoperator/leader.py)."""
    body = kubectl.json("lease", lease)
    holder = str((body.get("spec") or {}).get("holderIdentity") or "")
    return holder.split("_", 1)[0]


def operator_pods(kubectl: k8s.Kubectl, release: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
    items = kubectl.json("pods", "-l", selector)["items"]
    return sorted(p["metadata"]["name"] for p in items if not p["metadata"].get("deletionTimestamp"))


def test_two_operator_replicas_elect_one_leader_and_fail_over(cluster: str, own_operator: str) -> None:  # noqa: F811
    kubectl = create_namespace(cluster, "kv-lease")
    release = f"le-{secrets.token_hex(2)}"
    try:
        install(cluster, release, kubectl, own_operator, "--set", "operator.replicas=2")
        deployment = operator_deployment(kubectl, release)
        env = {
            e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        lease = str(env["KVSTORE_OPERATOR_LEASE_NAME"])
        assert env["KVSTORE_OPERATOR_LEADER_ELECTION_NAMESPACE"] == kubectl.namespace
        k8s.wait_until(lambda: len(operator_pods(kubectl, release)) == 2, 180, "two operator pods")
        k8s.wait_until(lambda: lease_holder(kubectl, lease), 120, f"a holder of Lease {lease}")

        store = k8s.Store(kubectl, "kvstore")
        k8s.wait_until(lambda: store.healthy(1), 600, "the chart's store to be Available")
        # Exactly one replica leads: the Lease names one of the two pods, and only it says it leads
        # (kopf's log lines go to the container's output).
        leader = lease_holder(kubectl, lease)
        pods = operator_pods(kubectl, release)
        assert leader in pods, (leader, pods)
        logs = {pod: kubectl("logs", pod, "--tail=-1") for pod in pods}
        leading = [pod for pod, log in logs.items() if "is the leader" in log]
        assert leading == [leader], (leading, leader)
        # The other stands by (operator/kvoperator/leader.py logs it once it finds the Lease held).
        assert all("standing by" in log for pod, log in logs.items() if pod != leader), logs

        transitions = int(kubectl.json("lease", lease)["spec"].get("leaseTransitions") or 0)
        kubectl("delete", "pod", leader, "--wait=false")
        k8s.wait_until(
            lambda: lease_holder(kubectl, lease) not in ("", leader),
            120,
            f"another operator replica to take Lease {lease} over from {leader}",
        )
        successor = lease_holder(kubectl, lease)
        assert successor != leader
        assert int(kubectl.json("lease", lease)["spec"].get("leaseTransitions") or 0) > transitions
        # The new leader acts: a scale completes.
        store.scale(2)
        k8s.wait_until(lambda: store.healthy(2), 600, "the store to scale to 2 under the new leader")
    finally:
        kubectl("delete", "kvstore", "kvstore", "--ignore-not-found", "--wait=true", "--timeout=180s",
                check=False, timeout=240)  # fmt: skip
        k8s.helm(cluster, "uninstall", release, "--namespace", kubectl.namespace, "--wait", "--timeout", "5m",
                 check=False)  # fmt: skip
        delete_namespace(kubectl)


# -- a node drain under load, with the PDB ---------------------------------------------------------

DRAIN_STORE = "drained"
DRAIN_REPLICAS = 3


@dataclass
class PodWatch:
    """The store's pods, polled every ``interval`` seconds in a thread until stopped: the most that
    were not Ready (or missing) at once."""

    store: k8s.Store
    replicas: int
    interval: float = 0.5
    worst: int = 0
    samples: int = 0
    history: list[tuple[float, list[str]]] = field(default_factory=list)  # (time, not Ready pods)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def not_ready(self) -> list[str]:
        ready = set()
        for pod in self.store.pods():
            conditions = pod["status"].get("conditions") or []
            if not pod["metadata"].get("deletionTimestamp") and any(
                c["type"] == "Ready" and c["status"] == "True" for c in conditions
            ):
                ready.add(pod["metadata"]["name"])
        return [self.store.pod(i) for i in range(self.replicas) if self.store.pod(i) not in ready]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                down = self.not_ready()
            except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired):
                pass  # kubectl failed once: the next poll counts
            else:
                self.samples += 1
                self.worst = max(self.worst, len(down))
                if down and (not self.history or self.history[-1][1] != down):
                    self.history.append((time.time(), down))
            self._stop.wait(self.interval)

    def start(self) -> PodWatch:
        self._thread = threading.Thread(target=self._loop, name="pod-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


@dataclass
class Writer:
    """QUORUM puts of distinct keys through the port-forwards (client-side routing off: the members'
    addresses are in-cluster), in a thread until stopped; only acknowledged keys are kept."""

    endpoints: list[str]
    acked: list[bytes] = field(default_factory=list)
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    async def _run(self) -> None:
        client = AsyncKVClient(self.endpoints, timeout=10.0, route=False, consistency="QUORUM")
        try:
            i = 0
            while not self._stop.is_set():
                key = b"drain-%06d" % i
                i += 1
                try:
                    await client.put(key, key)
                except Exception:  # noqa: BLE001 - unacknowledged: it may or may not be there
                    self.failed += 1
                    await asyncio.sleep(0.2)
                else:
                    self.acked.append(key)
        finally:
            await client.close()

    def start(self) -> Writer:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


@pytest.fixture
def drain_store(cluster: str) -> Iterator[k8s.Store]:
    kubectl = create_namespace(cluster, "kv-drain")
    store = k8s.Store(kubectl, DRAIN_STORE)
    kubectl.apply(k8s.chaos_store(DRAIN_STORE, kubectl.namespace, DRAIN_REPLICAS))
    try:
        k8s.wait_until(lambda: store.healthy(DRAIN_REPLICAS), 600, "the store to be Available with 3 members")
        yield store
    finally:
        kubectl("delete", "kvstore", DRAIN_STORE, "--ignore-not-found", "--wait=true", "--timeout=180s",
                check=False, timeout=240)  # fmt: skip
        delete_namespace(kubectl)


def test_a_node_drain_under_load_respects_the_pdb_and_loses_nothing(
    cluster: str, drain_store: k8s.Store
) -> None:
    store, kubectl = drain_store, drain_store.kubectl
    pdb = kubectl.json("pdb", DRAIN_STORE)
    assert pdb["spec"].get("maxUnavailable") == 1, pdb["spec"]
    # The worker that runs the most of the store's pods: draining it tests the PDB hardest.
    by_node: dict[str, list[str]] = {}
    for i in range(DRAIN_REPLICAS):
        by_node.setdefault(k8s.node_of(store, i), []).append(store.pod(i))
    node, on_node = max(by_node.items(), key=lambda item: len(item[1]))
    assert "control-plane" not in node, by_node

    uids = {pod: kubectl.json("pod", pod)["metadata"]["uid"] for pod in on_node}
    forwards = [k8s.PortForward(kubectl, store.pod(i), free_port()).start() for i in range(DRAIN_REPLICAS)]
    watch = PodWatch(store, DRAIN_REPLICAS)
    writer = Writer([f.endpoint for f in forwards])
    try:
        for forward in forwards:
            wait_serving(forward)
        writer.start()
        k8s.wait_until(lambda: len(writer.acked) >= 200, 120, "the load to get going", interval=0.5)
        watch.start()
        drained = k8s.run(
            ["kubectl", "--context", cluster, "drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
             "--timeout=600s"],
            timeout=700,
            check=False,
        )  # fmt: skip
        assert drained.returncode == 0, f"kubectl drain {node} failed: {drained.stderr[-2000:]}"
        # Every store pod on the node was evicted (the StatefulSet makes it again, under the same name).
        for pod, uid in uids.items():
            k8s.wait_until(
                lambda pod=pod, uid=uid: kubectl.json("pod", pod)["metadata"]["uid"] != uid,  # type: ignore[misc]
                120,
                f"{pod} to be evicted from {node}",
            )
        before = len(writer.acked)
        k8s.wait_until(lambda: len(writer.acked) > before + 50, 120, "writes to go on after the drain")
    finally:
        k8s.run(["kubectl", "--context", cluster, "uncordon", node], check=False)
        writer.stop()
    try:
        # The evicted pods come back (their local volumes are on the uncordoned node) and the store heals.
        k8s.wait_until(lambda: store.healthy(DRAIN_REPLICAS), 600, "the store to be healthy after the drain")
    finally:
        watch.stop()
        for forward in forwards:
            forward.bounce()
    try:
        assert watch.samples > 0
        assert watch.worst <= 1, f"more than one store pod was down at once: {watch.history}"
        assert writer.acked
        for forward in forwards:
            wait_serving(forward)
        missing = missing_keys(forwards[0].endpoint, writer.acked, types_pb2.CONSISTENCY_QUORUM)
        assert missing == [], f"{len(missing)} of {len(writer.acked)} acknowledged writes are missing"
    finally:
        for forward in forwards:
            forward.stop()

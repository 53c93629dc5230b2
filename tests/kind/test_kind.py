"""The chaos suite on a real Kubernetes cluster (kind): the operator from the chart, a 3-node KVStore,
the recorded workload and checker of e2e/chaos through ``kubectl port-forward``, and faults that
only Kubernetes has: pods deleted, kvnode killed or frozen inside its pod, a whole node paused
(``docker pause`` of a kind worker: the Node goes NotReady), and scaling up and down.

Each test runs the workload while its faults happen, heals, and then checks, as the local chaos
suite does: nothing acknowledged is lost, sessions read their own writes, LINEARIZABLE histories
are linearizable, the replicas converge; and the KVStore's status is true again (Available,
not Degraded, every replica Ready, every member Active). The repair tests also check that the
operator did the repair (its Events).

It runs wherever docker (with a running daemon), kind, kubectl and helm are installed, and is
skipped elsewhere, each test naming what is missing. How to run it: docs/kubernetes.md.

    pytest tests/kind -v                        # makes the cluster, builds and loads the image, installs
    KIND_CLUSTER_NAME=dev pytest tests/kind     # reuse (and keep) an existing cluster
    KVSTORE_BUILD=offline pytest tests/kind     # build the image without a registry (debootstrap base)
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.chaos import scenario
from e2e.chaos.faults import FaultLog
from e2e.chaos.workload import WorkloadConfig
from e2e.kind import k8s
from kvnode.testing.processes import free_port, is_serving

pytestmark = [pytest.mark.kind, pytest.mark.timeout(3600)]

STORE = "chaos"
REPLICAS = 3


@dataclass
class Env:
    context: str
    store: k8s.Store
    forwards: list[k8s.PortForward]
    artifacts: Path

    @property
    def endpoints(self) -> list[str]:
        return [f.endpoint for f in self.forwards]


@pytest.fixture(scope="module")
def env(cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    namespace = f"kv-chaos-{secrets.token_hex(3)}"
    k8s.run(["kubectl", "--context", cluster, "create", "namespace", namespace])
    kubectl = k8s.Kubectl(cluster, namespace)
    store = k8s.Store(kubectl, STORE)
    kubectl.apply(k8s.chaos_store(STORE, namespace, REPLICAS))
    forwards: list[k8s.PortForward] = []
    try:
        k8s.wait_until(
            lambda: store.healthy(REPLICAS), 600, "the KVStore to be Available with 3 Ready members"
        )
        forwards = [k8s.PortForward(kubectl, store.pod(i), free_port()).start() for i in range(REPLICAS)]
        for forward in forwards:
            wait_serving(forward)
        base = Path(os.environ.get("CHAOS_ARTIFACTS") or tmp_path_factory.mktemp("kind-chaos"))
        yield Env(cluster, store, forwards, base / "kind")
    finally:
        for forward in forwards:
            forward.stop()
        # Delete the store while the operator runs (its finalizer), then the namespace.
        kubectl("delete", "kvstore", STORE, "--wait=true", "--timeout=120s", check=False, timeout=180)
        k8s.run(
            ["kubectl", "--context", cluster, "delete", "namespace", namespace, "--wait=false"], check=False
        )


def workload_config() -> WorkloadConfig:
    # Four QUORUM sessions and two LINEARIZABLE ones; a short think time bounds the history.
    return WorkloadConfig(
        sessions=6,
        keys=40,
        levels=("QUORUM", "LINEARIZABLE", "QUORUM"),
        seed=scenario.pick_seed(),
        rpc_timeout=3.0,
        think_time=0.02,
        max_ops=150_000,
    )


def heal_for(env: Env, replicas: int = REPLICAS) -> Callable[[], Awaitable[None]]:
    async def heal() -> None:
        for node in await asyncio.to_thread(worker_nodes, env):
            await asyncio.to_thread(k8s.docker_unpause, node)
        await asyncio.to_thread(
            k8s.wait_until, lambda: env.store.healthy(replicas), 600, "the KVStore to be healthy again"
        )
        for forward in env.forwards:
            forward.bounce()
        for forward in env.forwards:
            await asyncio.to_thread(wait_serving, forward)

    return heal


def wait_serving(forward: k8s.PortForward) -> None:
    k8s.wait_until(
        lambda: is_serving(forward.endpoint),
        60,
        f"{forward.endpoint} to serve through its port-forward",
    )


def worker_nodes(env: Env) -> list[str]:
    out = k8s.run(["kubectl", "--context", env.context, "get", "nodes", "-o", "name"]).stdout.split()
    return [n.split("/", 1)[1] for n in out if "control-plane" not in n]


def run_scenario(
    env: Env,
    name: str,
    duration: float,
    faults: Callable[[FaultLog], Awaitable[None]],
    replicas: int = REPLICAS,
) -> scenario.ScenarioResult:
    result = asyncio.run(
        scenario.run(
            name,
            env.endpoints,
            workload_config(),
            duration=duration,
            artifacts=env.artifacts,
            faults=faults,
            heal=heal_for(env, replicas),
        )
    )
    check = result.check
    assert check.lost_writes.lost == [], result.failure("acknowledged writes were lost")
    assert check.ok, result.failure("the checker found violations")
    assert result.check.counts.get("ok", 0) > 100, result.failure("the workload barely ran")
    assert env.store.healthy(REPLICAS), "the KVStore's status is not true after healing"
    return result


def wait_ready(env: Env, ordinal: int, timeout: float = 300) -> None:
    def ready() -> bool:
        pod = env.store.pod_body(ordinal)
        if pod["metadata"].get("deletionTimestamp"):
            return False
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or []
        )

    k8s.wait_until(ready, timeout, f"{env.store.pod(ordinal)} to be Ready")


# -- the faults, as blocking steps (the fault scripts run them in threads) ---------------------------


def restart_count(env: Env, ordinal: int) -> int:
    statuses = env.store.pod_body(ordinal)["status"].get("containerStatuses") or []
    return int(next((s["restartCount"] for s in statuses if s["name"] == "kvnode"), 0))


def delete_pod_and_wait(env: Env, ordinal: int) -> None:
    uid = env.store.pod_body(ordinal)["metadata"]["uid"]
    env.store.kubectl("delete", "pod", env.store.pod(ordinal), "--wait=false")
    k8s.wait_until(
        lambda: env.store.pod_body(ordinal)["metadata"]["uid"] != uid, 120, "the pod to be recreated"
    )
    wait_ready(env, ordinal)


def kill_kvnode_and_wait(env: Env, ordinal: int) -> None:
    before = restart_count(env, ordinal)
    k8s.signal_kvnode(env.store, ordinal, "KILL")
    k8s.wait_until(lambda: restart_count(env, ordinal) > before, 120, "the kvnode container to restart")
    wait_ready(env, ordinal)


def freeze_kvnode_until_repaired(env: Env, ordinal: int, events_before: int) -> None:
    k8s.signal_kvnode(env.store, ordinal, "STOP")
    k8s.wait_until(
        lambda: len(env.store.events("RestartedUnhealthyPod")) > events_before,
        180,
        "the operator to restart the frozen pod",
    )
    wait_ready(env, ordinal)


def pause_node_until_repaired(env: Env, node: str, events_before: int) -> None:
    k8s.docker_pause(node)
    try:
        k8s.wait_until(lambda: not k8s.node_ready(env.store.kubectl, node), 180, f"{node} to be NotReady")
        k8s.wait_until(
            lambda: len(env.store.events("ForceDeletedStuckPod")) > events_before,
            300,
            "the operator to force-delete the pod stuck Terminating on the NotReady node",
        )
    finally:
        k8s.docker_unpause(node)


def scale_and_wait(env: Env, replicas: int) -> None:
    env.store.scale(replicas)
    k8s.wait_until(lambda: env.store.healthy(replicas), 600, f"{replicas} healthy members")


# -- the tests -------------------------------------------------------------------------------------


def test_deleted_pods_come_back_and_nothing_is_lost(env: Env) -> None:
    async def faults(log: FaultLog) -> None:
        await asyncio.sleep(10)
        for ordinal in (0, 2):
            async with log.span("delete-pod", env.store.pod(ordinal)):
                await asyncio.to_thread(delete_pod_and_wait, env, ordinal)
            await asyncio.sleep(10)

    result = run_scenario(env, "kind-delete-pods", 150, faults)
    assert result.stats.unavailable.length < 30, result.failure("unavailable for 30 s or more")


def test_kvnode_killed_inside_its_pod_restarts(env: Env) -> None:
    before = {o: restart_count(env, o) for o in (1, 2)}

    async def faults(log: FaultLog) -> None:
        await asyncio.sleep(10)
        for ordinal in (1, 2):
            log.instant("kill-9", env.store.pod(ordinal), "SIGKILL to kvnode from its kind node")
            await asyncio.to_thread(kill_kvnode_and_wait, env, ordinal)
            await asyncio.sleep(10)

    result = run_scenario(env, "kind-kill-kvnode", 150, faults)
    assert result.stats.unavailable.length < 30, result.failure("unavailable for 30 s or more")
    for ordinal, count in before.items():
        assert restart_count(env, ordinal) > count


def test_operator_restarts_a_frozen_node(env: Env) -> None:
    """kvnode stopped with SIGSTOP: the container looks Running, its gRPC health check fails, and
    the operator deletes the pod after its unhealthy threshold (20 s in e2e/kind/values.yaml)."""
    before = len(env.store.events("RestartedUnhealthyPod"))
    uid = env.store.pod_body(1)["metadata"]["uid"]

    async def faults(log: FaultLog) -> None:
        await asyncio.sleep(10)
        async with log.span("sigstop", env.store.pod(1)):
            await asyncio.to_thread(freeze_kvnode_until_repaired, env, 1, before)
        await asyncio.sleep(10)

    run_scenario(env, "kind-frozen-node", 200, faults)
    assert env.store.pod_body(1)["metadata"]["uid"] != uid


def test_paused_kind_node_goes_notready_and_the_operator_repairs_its_pod(env: Env) -> None:
    """docker pause of the worker that hosts one store pod: the Node goes NotReady, the pod is
    evicted and stays Terminating (no kubelet confirms it), the operator force-deletes it, and once
    the node is back the StatefulSet's new pod (bound to its volume there) serves again."""
    by_node: dict[str, list[int]] = {}
    for ordinal in range(REPLICAS):
        by_node.setdefault(k8s.node_of(env.store, ordinal), []).append(ordinal)
    alone = [(node, ords[0]) for node, ords in by_node.items() if len(ords) == 1]
    assert alone, f"no worker runs exactly one store pod: {by_node}"
    node, ordinal = alone[0]
    before = len(env.store.events("ForceDeletedStuckPod"))

    async def faults(log: FaultLog) -> None:
        await asyncio.sleep(10)
        async with log.span("docker-pause", node, f"hosts {env.store.pod(ordinal)}"):
            await asyncio.to_thread(pause_node_until_repaired, env, node, before)
        await asyncio.to_thread(wait_ready, env, ordinal, 420)
        await asyncio.sleep(10)

    run_scenario(env, "kind-pause-node", 480, faults)
    assert not k8s.paused(node)


def test_scale_up_and_down_under_load(env: Env) -> None:
    async def faults(log: FaultLog) -> None:
        await asyncio.sleep(10)
        async with log.span("scale", "3->4"):
            await asyncio.to_thread(scale_and_wait, env, 4)
        await asyncio.sleep(10)
        async with log.span("scale", "4->3"):
            await asyncio.to_thread(scale_and_wait, env, 3)
        await asyncio.sleep(5)

    run_scenario(env, "kind-scale", 400, faults)
    assert env.store.kubectl.json("statefulset", STORE)["spec"]["replicas"] == REPLICAS

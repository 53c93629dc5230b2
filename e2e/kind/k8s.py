"""The kind suite's tools: what is installed, kubectl, port-forwards that survive pod restarts, and
the faults (delete a pod, SIGKILL or SIGSTOP kvnode inside a pod, pause a kind node).

Everything here drives real programs (kind, kubectl, helm, docker); the chaos workload and checker
come from e2e/chaos unchanged and only see ``127.0.0.1:<port>`` endpoints.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.image.build_and_test import docker_problem

REPO = Path(__file__).resolve().parents[2]
KIND_DIR = REPO / "e2e" / "kind"
TOOLS = ("docker", "kind", "kubectl", "helm")
BACKUP_MOUNT = "/var/kvstore-backups"  # where kind-config.yaml mounts the shared backup folder
Body = dict[str, Any]


def missing_tools() -> list[str]:
    """What keeps the kind suite from running here, each named exactly (empty: it can run)."""
    missing = [f"{tool} (not on PATH)" for tool in TOOLS if shutil.which(tool) is None]
    if shutil.which("docker") is not None and (problem := docker_problem()) is not None:
        missing.append(problem)
    return missing


def run(args: Sequence[str], *, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result


def run_input(args: Sequence[str], data: str, *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a program with ``data`` on its stdin; how it went, failure included."""
    return subprocess.run(
        list(args), input=data, capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception as exc:  # noqa: BLE001 - kubectl, gRPC or JSON fail until the condition holds
            last = str(exc)
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last})" if last else ""))


@dataclass
class Kubectl:
    context: str
    namespace: str

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        return run(["kubectl", "--context", self.context, "-n", self.namespace, *args],
                   timeout=timeout, check=check).stdout  # fmt: skip

    def json(self, *args: str) -> Body:
        data: Body = json.loads(self("get", *args, "-o", "json"))
        return data

    def result(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run kubectl and return how it went, failure included (to check what it refused)."""
        return run(["kubectl", "--context", self.context, "-n", self.namespace, *args],
                   timeout=timeout, check=False)  # fmt: skip

    def exists(self, kind: str, name: str) -> bool:
        return bool(self("get", kind, name, "--ignore-not-found", "-o", "name").strip())

    def apply(self, body: Body) -> None:
        proc = subprocess.run(
            ["kubectl", "--context", self.context, "-n", self.namespace, "apply", "-f", "-"],
            input=json.dumps(body), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl apply failed: {proc.stderr.strip()}")


# -- helm ------------------------------------------------------------------------------------------

# The release e2e/kind/up.sh installs, and its operator.
RELEASE = "kvstore"
RELEASE_NAMESPACE = "kvstore-system"
OPERATOR = "kvstore-operator"
CHART = REPO / "charts" / "kvstore"


def helm(
    context: str, *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``helm --kube-context <context> ...``."""
    return run(["helm", "--kube-context", context, *args], timeout=timeout, check=check)


def operator_image(context: str) -> str:
    """The image the installed operator runs (the one up.sh built and loaded)."""
    out = run(["kubectl", "--context", context, "-n", RELEASE_NAMESPACE, "get", "deployment", OPERATOR,
               "-o", "jsonpath={.spec.template.spec.containers[0].image}"]).stdout  # fmt: skip
    return out.strip()


def scale_operator(context: str, replicas: int) -> None:
    """Scale up.sh's operator, and wait until that many of its pods run (none: all gone)."""
    run(["kubectl", "--context", context, "-n", RELEASE_NAMESPACE, "scale", "deployment", OPERATOR,
         f"--replicas={replicas}"])  # fmt: skip
    if replicas:
        run(["kubectl", "--context", context, "-n", RELEASE_NAMESPACE, "rollout", "status",
             f"deployment/{OPERATOR}", "--timeout=180s"], timeout=240)  # fmt: skip
        return
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"

    def gone() -> bool:
        out = run(["kubectl", "--context", context, "-n", RELEASE_NAMESPACE, "get", "pods", "-l", selector,
                   "-o", "name"]).stdout  # fmt: skip
        return not out.strip()

    wait_until(gone, 120, "the operator's pods to be gone")


# -- port-forwards ---------------------------------------------------------------------------------


@dataclass
class PortForward:
    """``kubectl port-forward pod/<pod> <local>:<remote>``, started again whenever it exits (a pod
    that was deleted or restarted), so the endpoint ``127.0.0.1:<local>`` stays the same."""

    kubectl: Kubectl
    pod: str
    local: int
    remote: int = 7000
    _process: subprocess.Popen[bytes] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    restarts: int = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.local}"

    def start(self) -> PortForward:
        self._thread = threading.Thread(target=self._loop, name=f"port-forward-{self.pod}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._process = subprocess.Popen(
                ["kubectl", "--context", self.kubectl.context, "-n", self.kubectl.namespace,
                 "port-forward", f"pod/{self.pod}", f"{self.local}:{self.remote}", "--address", "127.0.0.1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            while self._process.poll() is None and not self._stop.is_set():
                time.sleep(0.2)
            if self._process.poll() is None:
                self._process.terminate()
                self._process.wait(timeout=10)
            self.restarts += 1
            self._stop.wait(0.5)

    def bounce(self) -> None:
        """Start the forward again (after a node pause, a stream may hang rather than end)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def stop(self) -> None:
        self._stop.set()
        self.bounce()
        if self._thread is not None:
            self._thread.join(timeout=15)


# -- the store -------------------------------------------------------------------------------------


@dataclass
class Store:
    kubectl: Kubectl
    name: str

    def pod(self, ordinal: int) -> str:
        return f"{self.name}-{ordinal}"

    def body(self) -> Body:
        return self.kubectl.json("kvstore", self.name)

    def pods(self) -> list[Body]:
        data = self.kubectl.json("pods", "-l", f"app.kubernetes.io/instance={self.name}")
        items: list[Body] = data["items"]
        return items

    def pod_body(self, ordinal: int) -> Body:
        return self.kubectl.json("pod", self.pod(ordinal))

    def healthy(self, replicas: int) -> bool:
        """Status true: Available and not Degraded, every replica Ready, every member Active and
        ready, and the operator has seen the current spec."""
        body = self.body()
        status = body.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        members = status.get("members") or []
        return bool(
            conditions.get("Available") == "True"
            and conditions.get("Degraded") == "False"
            and status.get("readyReplicas") == replicas
            and status.get("observedGeneration") == body["metadata"].get("generation")
            and len(members) == replicas
            and all(m.get("state") == "Active" and m.get("ready") for m in members)
        )

    def scale(self, replicas: int) -> None:
        self.kubectl("patch", "kvstore", self.name, "--type", "merge", "-p",
                     json.dumps({"spec": {"replicas": replicas}}))  # fmt: skip

    def events(self, reason: str) -> list[Body]:
        data = self.kubectl.json(
            "events",
            "--field-selector",
            f"involvedObject.kind=KVStore,involvedObject.name={self.name},reason={reason}",
        )
        items: list[Body] = data["items"]
        return items


def backup_mount_problem(context: str) -> str | None:
    """Why the cluster's nodes cannot share a backup volume (None: they can). A cluster made
    without e2e/kind/kind-config.yaml's extraMounts has no shared folder."""
    out = run(["kubectl", "--context", context, "get", "nodes", "-o", "name"]).stdout.split()
    nodes = [n.split("/", 1)[1] for n in out]
    for node in nodes:
        if run(["docker", "exec", node, "test", "-d", BACKUP_MOUNT], check=False).returncode != 0:
            return (
                f"node {node} has no {BACKUP_MOUNT}: the cluster was made without the extraMounts "
                "of e2e/kind/kind-config.yaml (delete it and run e2e/kind/up.sh again)"
            )
    # The nodes write as uid 10001 and fsGroup does not apply to hostPath; every node mounts the
    # same host folder, so one chmod (as root, from a node) covers them all.
    run(["docker", "exec", nodes[0], "chmod", "0777", BACKUP_MOUNT], check=False)
    return None


def apply_backup_volume(kubectl: Kubectl) -> str:
    """e2e/kind/backup-volume.yaml in ``kubectl.namespace``, its PersistentVolume renamed after the
    namespace (a volume binds to one claim only); returns the claim's name once it is Bound."""
    manifest = str(KIND_DIR / "backup-volume.yaml")
    out = kubectl("create", "--dry-run=client", "-o", "json", "-f", manifest)
    items: list[Body] = json.loads(out)["items"]  # two objects: kubectl prints a List
    volume = f"kvstore-e2e-backups-{kubectl.namespace}"
    claim = ""
    for item in items:
        if item["kind"] == "PersistentVolume":
            item["metadata"]["name"] = volume
        else:
            item["spec"]["volumeName"] = volume
            claim = item["metadata"]["name"]
    kubectl.apply({"apiVersion": "v1", "kind": "List", "items": items})
    wait_until(
        lambda: kubectl.json("pvc", claim)["status"].get("phase") == "Bound", 60, f"PVC {claim} to bind"
    )
    return claim


def delete_backup_volume(kubectl: Kubectl) -> None:
    """The namespace's PersistentVolume (the files stay in the host folder: Retain)."""
    kubectl("delete", "pv", f"kvstore-e2e-backups-{kubectl.namespace}", "--ignore-not-found",
            "--wait=false", check=False)  # fmt: skip


def chaos_store(name: str, namespace: str, replicas: int) -> Body:
    """The KVStore the kind suite runs its chaos against."""
    return {
        "apiVersion": "kvstore.dev/v1alpha1",
        "kind": "KVStore",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "replicationFactor": 3,
            "partitions": 64,
            "storage": {"size": "1Gi"},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
            # The workload's clients and checks speak plaintext through port-forwards (TLS under chaos
            # is the local chaos suite's; docs/kubernetes-security.md for TLS on a cluster).
            "tls": {"enabled": False},
            # Evict pods from a NotReady node after 5 s instead of 5 minutes, so that the paused-node
            # test sees a pod stuck Terminating, which the operator must force-delete.
            "tolerations": [
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}
                for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
            ],
        },
    }


# -- faults ----------------------------------------------------------------------------------------


def node_of(store: Store, ordinal: int) -> str:
    node: str = store.pod_body(ordinal)["spec"]["nodeName"]
    return node


def container_pid(store: Store, ordinal: int) -> tuple[str, int]:
    """The kind node (a docker container) that runs the pod, and kvnode's PID on that node.

    kvnode is PID 1 of its container, and a PID 1 cannot be SIGKILLed from inside its own PID
    namespace, so the faults signal it from the node (``crictl inspect`` gives the host PID)."""
    pod = store.pod_body(ordinal)
    node = pod["spec"]["nodeName"]
    statuses = pod["status"].get("containerStatuses") or []
    container_id = next(s["containerID"] for s in statuses if s["name"] == "kvnode").split("://", 1)[1]
    out = run(["docker", "exec", node, "crictl", "inspect", "--output", "json", container_id]).stdout
    pid = int(json.loads(out)["info"]["pid"])
    return node, pid


def signal_kvnode(store: Store, ordinal: int, signal: str) -> None:
    node, pid = container_pid(store, ordinal)
    run(["docker", "exec", node, "kill", f"-{signal}", str(pid)])


def docker_pause(node: str) -> None:
    run(["docker", "pause", node])


def docker_unpause(node: str) -> None:
    run(["docker", "unpause", node], check=False)


def paused(node: str) -> bool:
    out = run(["docker", "inspect", "--format", "{{.State.Paused}}", node], check=False).stdout.strip()
    return out == "true"


def node_ready(kubectl: Kubectl, node: str) -> bool:
    body = json.loads(
        run(["kubectl", "--context", kubectl.context, "get", "node", node, "-o", "json"]).stdout
    )
    return any(c["type"] == "Ready" and c["status"] == "True" for c in body["status"]["conditions"])

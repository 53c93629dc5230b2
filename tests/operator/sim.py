"""The test plays the StatefulSet controller, the scheduler, the kubelet and cluster DNS.

:class:`ClusterSim` polls the API server (kmock) and, for every StatefulSet, creates and deletes Pod
objects the way the StatefulSet controller does (``podManagementPolicy: Parallel``). As the kubelet
it starts a REAL ``kvnode`` process for each pod, from the pod template's own container env
(``fieldRef``, ``configMapKeyRef``, ``envFrom`` Secrets and ``$(VAR)`` expansion included),
listening on the pod's IP: a distinct loopback address such as 127.0.7.11. Seed peers' DNS names
resolve to those IPs (cluster DNS). The pod's Ready condition follows the node's gRPC health, as a
readiness probe would; a deleted pod's process gets SIGTERM and the deletion is confirmed -- unless
the pod's node is NotReady, which leaves the pod stuck Terminating. Volumes from
``volumeClaimTemplates`` are folders that outlive pods, like PVCs; Secret volumes are folders
holding the Secret's items.

Everything runs in one background thread, so the operator's gRPC calls reach real nodes and the
test's assertions check real data.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvoperator import kube

from kvnode.client import Admin, Credentials
from kvnode.testing.convergence import membership_of
from tests.operator.kubectl import ApiError, Kubectl

log = logging.getLogger("tests.operator.sim")
SECRETS = kube.Resource("", "v1", "secrets")
Body = dict[str, Any]

_blocks = itertools.count(20)  # 127.0.<block>.x: a fresh block per store and test session


def _mounts_secrets(sts: Body) -> bool:
    volumes = sts["spec"]["template"]["spec"].get("volumes") or []
    return any("secret" in volume for volume in volumes)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready(body: Body) -> bool:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


@dataclass
class Container:
    pod: str
    uid: str
    ip: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int
    restarts: int = 0
    paused: bool = False
    stopping_since: float | None = None
    # With a TLS Secret mounted: the node's own certificate, to ask for its health as a probe would.
    credentials: Credentials | None = None


@dataclass
class ClusterSim:
    kubectl: Kubectl
    namespace: str
    root: Path
    nodes: tuple[str, ...] = ("node-a", "node-b", "node-c")
    interval: float = 0.1
    containers: dict[str, Container] = field(default_factory=dict)
    blocks: dict[str, int] = field(default_factory=dict)
    # Invariant checks: pods deleted by scale-down that were still members at that moment.
    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Pods the API server refused to create (422), as the StatefulSet controller's events would say.
    refused: list[str] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _scheduled: itertools.cycle[str] | None = None
    _ready_nodes: list[str] = field(default_factory=list)
    _secrets: dict[str, Body] = field(default_factory=dict)  # this round's, by name

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ClusterSim:
        for node in self.nodes:
            self.kubectl.create(
                kube.NODES,
                None,
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}, "status": {}},
            )
            self.set_node_ready(node, True)
        self._scheduled = itertools.cycle(self.nodes)
        self._thread = threading.Thread(target=self._run, name="cluster-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            for container in self.containers.values():
                self._kill(container)
            self.containers.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:
                log.exception("cluster sim step failed")
                self.errors.append(repr(exc))
            self._stop.wait(self.interval)

    # -- addressing ----------------------------------------------------------------------------

    def ip(self, store: str, ordinal: int) -> str:
        with self._lock:
            if store not in self.blocks:
                self.blocks[store] = next(_blocks)
            return f"127.0.{self.blocks[store]}.{11 + ordinal}"

    def pvc_dir(self, pod: str) -> Path:
        return self.root / "pvc" / f"data-{pod}"

    # -- one round ------------------------------------------------------------------------------

    def step(self) -> None:
        stses = self.kubectl.list(kube.STATEFULSETS, self.namespace)
        pods = {p["metadata"]["name"]: p for p in self.kubectl.list(kube.PODS, self.namespace)}
        configmaps = {c["metadata"]["name"]: c for c in self.kubectl.list(kube.CONFIGMAPS, self.namespace)}
        nodes = {n["metadata"]["name"]: n for n in self.kubectl.list(kube.NODES)}
        if any(_mounts_secrets(sts) for sts in stses):  # no extra request per round for plaintext stores
            secrets = self.kubectl.list(kube.SECRETS, self.namespace)
            self._secrets = {s["metadata"]["name"]: s for s in secrets}
        self._ready_nodes = [n for n in self.nodes if n in nodes and _ready(nodes[n])]
        for sts in stses:
            self._statefulset(sts, pods)
        pods = {p["metadata"]["name"]: p for p in self.kubectl.list(kube.PODS, self.namespace)}
        stores = {s["metadata"]["name"]: s for s in stses}
        for pod in pods.values():
            self._kubelet(pod, stores, configmaps, nodes)
        with self._lock:
            for name in [
                n for n, c in self.containers.items() if n not in pods or pods[n]["metadata"]["uid"] != c.uid
            ]:
                if name not in pods or not pods[name]["metadata"].get("deletionTimestamp"):
                    self._kill(self.containers.pop(name))
        for sts in stses:
            self._statefulset_status(sts, pods)

    # -- the StatefulSet controller --------------------------------------------------------------

    def _owned(self, pod: Body, sts: Body) -> bool:
        refs = pod["metadata"].get("ownerReferences") or []
        return any(r.get("uid") == sts["metadata"]["uid"] for r in refs)

    def _statefulset(self, sts: Body, pods: dict[str, Body]) -> None:
        if sts["metadata"].get("deletionTimestamp"):
            return
        name = sts["metadata"]["name"]
        replicas = int(sts["spec"].get("replicas", 1))
        for ordinal in range(replicas):
            pod_name = f"{name}-{ordinal}"
            if pod_name not in pods:
                self._create_pod(sts, ordinal)
        for pod_name, pod in pods.items():
            match = re.fullmatch(re.escape(name) + r"-(\d+)", pod_name)
            if not match or not self._owned(pod, sts):
                continue
            ordinal = int(match.group(1))
            if ordinal >= replicas and not pod["metadata"].get("deletionTimestamp"):
                self._check_not_member(pod_name, ordinal, name)
                self.kubectl.delete(kube.PODS, self.namespace, pod_name)
        policy = sts["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
        if policy.get("whenScaled") == "Delete":
            for path in (self.root / "pvc").glob(f"data-{name}-*"):
                ordinal = int(path.name.rsplit("-", 1)[1])
                if ordinal >= replicas and f"{name}-{ordinal}" not in pods:
                    shutil.rmtree(path, ignore_errors=True)

    def _check_not_member(self, pod_name: str, ordinal: int, store: str) -> None:
        """Record a violation if the pod a scale-down removes is still a member of its cluster."""
        with self._lock:
            leaving = self.containers.get(pod_name)
            others = [self.containers.get(f"{store}-{i}") for i in range(ordinal)]
        for other in others:
            if other is None or leaving is None or other.process.poll() is not None:
                continue
            with contextlib.suppress(Exception):
                membership = membership_of(f"{other.ip}:{other.port}")
                if membership.member(pod_name) is not None:
                    self.violations.append(f"{pod_name} deleted while a member (epoch {membership.epoch})")
                return

    def _create_pod(self, sts: Body, ordinal: int) -> None:
        name = sts["metadata"]["name"]
        template = sts["spec"]["template"]
        pod_name = f"{name}-{ordinal}"
        assert self._scheduled is not None
        # The StatefulSet controller labels each pod with its ControllerRevision's name,
        # "<statefulset>-<hash>" (pkg/controller/history/controller_history.go), so a StatefulSet
        # name over 52 characters makes a label value over 63 and every pod create is refused.
        revision = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        labels = {
            **(template.get("metadata", {}).get("labels") or {}),
            "statefulset.kubernetes.io/pod-name": pod_name,
            "apps.kubernetes.io/pod-index": str(ordinal),
            "controller-revision-hash": f"{name}-{revision}",
        }
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": dict(template.get("metadata", {}).get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "StatefulSet",
                        "name": name,
                        "uid": sts["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                **template["spec"],
                "hostname": pod_name,
                "subdomain": sts["spec"].get("serviceName", ""),
                "nodeName": self._schedule(),
            },
            "status": {"phase": "Pending"},
        }
        try:
            self.kubectl.create(kube.PODS, self.namespace, body)
        except ApiError as exc:
            if exc.status == 422:
                self.refused.append(f"pod {pod_name}: {exc}")

    def _schedule(self) -> str:
        """Round-robin over the Ready nodes (the scheduler)."""
        assert self._scheduled is not None
        for _ in self.nodes:
            node = next(self._scheduled)
            if node in self._ready_nodes:
                return node
        return next(self._scheduled)

    def _statefulset_status(self, sts: Body, pods: dict[str, Body]) -> None:
        if sts["metadata"].get("deletionTimestamp"):
            return
        owned = [p for p in pods.values() if self._owned(p, sts)]
        status = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(owned),
            "readyReplicas": sum(1 for p in owned if _ready(p)),
            "availableReplicas": sum(1 for p in owned if _ready(p)),
            "currentReplicas": len(owned),
            "updatedReplicas": len(owned),
        }
        if {k: (sts.get("status") or {}).get(k) for k in status} != status:
            with contextlib.suppress(ApiError):
                self.kubectl.patch(
                    kube.STATEFULSETS, self.namespace, sts["metadata"]["name"], {"status": status}, "status"
                )

    # -- the kubelet --------------------------------------------------------------------------

    def _kubelet(
        self, pod: Body, stores: dict[str, Body], configmaps: dict[str, Body], nodes: dict[str, Body]
    ) -> None:
        meta = pod["metadata"]
        name = meta["name"]
        node = nodes.get(pod["spec"].get("nodeName", ""))
        node_ready = node is not None and _ready(node)
        if meta.get("deletionTimestamp"):
            if not node_ready:
                return  # the kubelet is gone: nobody confirms the deletion
            with self._lock:
                container = self.containers.get(name)
                if container is not None and container.uid != meta["uid"]:
                    container = None
                if container is not None and container.process.poll() is None:
                    if container.stopping_since is None:  # SIGTERM, then wait without blocking
                        container.stopping_since = time.monotonic()
                        with contextlib.suppress(ProcessLookupError):
                            container.process.send_signal(signal.SIGCONT)
                            container.process.send_signal(signal.SIGTERM)
                        return
                    if time.monotonic() - container.stopping_since < 15:
                        return
                    self._kill(container)
                if container is not None:
                    self.containers.pop(name, None)
            with contextlib.suppress(ApiError):
                self.kubectl.delete(kube.PODS, self.namespace, name, grace=0)
            return
        if not node_ready:
            return
        owner = next(
            (r["name"] for r in meta.get("ownerReferences") or [] if r.get("kind") == "StatefulSet"), None
        )
        sts = stores.get(owner or "")
        if sts is None:
            return
        ordinal = int(name.rsplit("-", 1)[1])
        ip = self.ip(owner or "", ordinal)
        with self._lock:
            container = self.containers.get(name)
            if container is not None and container.uid != meta["uid"]:
                self._kill(self.containers.pop(name))
                container = None
            if container is None:
                try:
                    container = self._start(pod, sts, ip, configmaps)
                except LookupError:  # a Secret it mounts is not there yet: ContainerCreating
                    return
                self.containers[name] = container
            elif (
                container.process.poll() is not None
                and not container.paused
                and container.stopping_since is None
            ):
                restarts = container.restarts + 1
                container = self._start(pod, sts, ip, configmaps)
                container.restarts = restarts
                self.containers[name] = container
        self._refresh_secret_volumes(pod)
        ready = False
        if container.process.poll() is None:
            with (
                contextlib.suppress(Exception),
                Admin.connect(timeout=0.3, credentials=container.credentials) as admin,
            ):
                ready = admin.health(f"{ip}:{self._grpc_port(pod)}")
        status = pod.get("status") or {}
        if status.get("phase") != "Running" or _ready(pod) != ready or status.get("podIP") != ip:
            patch = {
                "status": {
                    "phase": "Running",
                    "podIP": ip,
                    "podIPs": [{"ip": ip}],
                    "hostIP": "10.0.0.1",
                    "startTime": status.get("startTime") or _now(),
                    "conditions": [
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "Initialized", "status": "True"},
                        {"type": "ContainersReady", "status": "True" if ready else "False"},
                        {
                            "type": "Ready",
                            "status": "True" if ready else "False",
                            "lastTransitionTime": _now(),
                        },
                    ],
                    "containerStatuses": [
                        {
                            "name": "kvnode",
                            "ready": ready,
                            "restartCount": container.restarts,
                            "state": {"running": {"startedAt": _now()}},
                        }
                    ],
                }
            }
            with contextlib.suppress(ApiError):
                self.kubectl.patch(kube.PODS, self.namespace, name, patch, "status")

    @staticmethod
    def _grpc_port(pod: Body) -> int:
        for port in pod["spec"]["containers"][0].get("ports") or []:
            if port.get("name") == "grpc":
                return int(port["containerPort"])
        raise AssertionError("the pod template has no grpc port")

    def _env(self, pod: Body, sts: Body, ip: str, configmaps: dict[str, Body]) -> dict[str, str]:
        container = pod["spec"]["containers"][0]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:  # first: ``env`` entries override them
            env.update(self._secret(source["secretRef"]["name"]))
        fields = {
            "metadata.name": pod["metadata"]["name"],
            "metadata.namespace": self.namespace,
            "status.podIP": ip,
        }
        for item in container.get("env") or []:
            if "value" in item:
                value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), str(item["value"]))
            elif "fieldRef" in item.get("valueFrom", {}):
                value = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
            else:
                ref = item["valueFrom"]["configMapKeyRef"]
                value = str(configmaps[ref["name"]]["data"][ref["key"]])
            env[item["name"]] = value
        # Volumes: claim templates are per-pod folders; other mounts are used as they are.
        claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates") or []}
        for mount in container.get("volumeMounts") or []:
            if mount["name"] in claims:
                target = self.root / "pvc" / f"{mount['name']}-{pod['metadata']['name']}"
                target.mkdir(parents=True, exist_ok=True)
                for key, value in env.items():
                    if value.startswith(mount["mountPath"]):
                        env[key] = str(target) + value[len(mount["mountPath"]) :]
        # Secret volumes: the Secret's keys as files in a folder of the pod's (the kubelet's copy).
        for mount in container.get("volumeMounts") or []:
            folder = self._secret_folder(pod, mount["name"])
            if folder is not None:
                for key, value in env.items():
                    if value.startswith(mount["mountPath"]):
                        env[key] = str(folder) + value[len(mount["mountPath"]) :]
        # The pod's own network: listen on its IP; cluster DNS: pod names resolve to pod IPs.
        for key in ("KVNODE_LISTEN", "KVNODE_METRICS_LISTEN", "KVNODE_PEER_LISTEN"):
            if key in env:
                env[key] = re.sub(r"^0\.0\.0\.0:", f"{ip}:", env[key])
        store = sts["metadata"]["name"]

        def resolve(match: re.Match[str]) -> str:
            return f"{self.ip(store, int(match.group(1)))}:"

        dns = re.compile(re.escape(store) + r"-(\d+)\.[A-Za-z0-9.\-]+\.svc(?:\.[A-Za-z0-9.\-]+)?:")
        for key in ("KVNODE_PEERS", "KVNODE_ADVERTISE", "KVNODE_PEER_ADVERTISE"):
            if key in env:
                env[key] = dns.sub(resolve, env[key])
        return env

    def _secret(self, name: str) -> dict[str, str]:
        body = self.kubectl.get(SECRETS, self.namespace, name) or {}
        return {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()}

    def _secret_folder(self, pod: Body, volume_name: str) -> Path | None:
        """The files of a Secret volume of ``pod``, written for it (None: not a Secret volume).
        A Secret that does not exist yet raises: the kubelet waits for it (ContainerCreating)."""
        volume = next((v for v in pod["spec"].get("volumes") or [] if v["name"] == volume_name), None)
        if volume is None or "secret" not in volume:
            return None
        secret = self._secrets.get(volume["secret"]["secretName"])
        if secret is None:
            raise LookupError(f"Secret {volume['secret']['secretName']} does not exist yet")
        folder = Path(self.root, "secrets", pod["metadata"]["name"], volume_name)
        folder.mkdir(parents=True, exist_ok=True)
        for key, value in (secret.get("data") or {}).items():
            data, target = base64.b64decode(value), folder / key
            if not target.exists() or target.read_bytes() != data:  # whole files, as the kubelet swaps
                tmp = folder / f".{key}.tmp"
                tmp.write_bytes(data)
                tmp.replace(target)
        return folder

    def _refresh_secret_volumes(self, pod: Body) -> None:
        """As the kubelet does for a running pod: a changed Secret's files are updated in place (a
        deleted Secret leaves them as they were)."""
        for volume in pod["spec"].get("volumes") or []:
            if "secret" in volume:
                with contextlib.suppress(LookupError):
                    self._secret_folder(pod, volume["name"])

    @staticmethod
    def _probe_credentials(env: dict[str, str]) -> Credentials | None:
        """A probe's identity on a TLS node: the node's own certificate (its SANs name localhost)."""
        if "KVNODE_CERT_FILE" not in env:
            return None
        files = (env["KVNODE_TRUSTED_CA_FILE"], env["KVNODE_CERT_FILE"], env["KVNODE_KEY_FILE"])
        return Credentials.from_files(*files, server_name="localhost")

    def _start(self, pod: Body, sts: Body, ip: str, configmaps: dict[str, Body]) -> Container:
        env = self._env(pod, sts, ip, configmaps)
        name = pod["metadata"]["name"]
        log_path = self.root / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            log_file.write(f"--- start {_now()} uid {pod['metadata']['uid']}\n".encode())
            log_file.flush()
            process = subprocess.Popen(
                [sys.executable, "-m", "kvnode"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1", "KVNODE_LOG_LEVEL": "info"},
            )
        uid, port, probe = pod["metadata"]["uid"], self._grpc_port(pod), self._probe_credentials(env)
        return Container(name, uid, ip, process, log_path, port, credentials=probe)

    @staticmethod
    def _kill(container: Container) -> None:
        process = container.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)

    # -- what tests do to the "cluster" ------------------------------------------------------

    def set_node_ready(self, node: str, ready: bool) -> None:
        status = {
            "conditions": [
                {"type": "Ready", "status": "True" if ready else "Unknown", "lastHeartbeatTime": _now()}
            ]
        }
        self.kubectl.patch(kube.NODES, None, node, {"status": status}, "status")

    def container(self, pod: str) -> Container:
        with self._lock:
            return self.containers[pod]

    def pause(self, pod: str) -> None:
        """SIGSTOP: the container stays Running but its node answers nothing."""
        container = self.container(pod)
        container.paused = True
        container.process.send_signal(signal.SIGSTOP)

    def resume(self, pod: str) -> None:
        container = self.container(pod)
        container.process.send_signal(signal.SIGCONT)
        container.paused = False

    def lose_volume(self, pod: str) -> None:
        """The node dies and its volume is replaced by an empty one; the kubelet restarts it."""
        with self._lock:
            container = self.containers[pod]
            container.process.kill()
            container.process.wait(timeout=10)
            shutil.rmtree(self.pvc_dir(pod), ignore_errors=True)

    def node_of(self, pod: str) -> str:
        body = self.kubectl.get(kube.PODS, self.namespace, pod)
        assert body is not None
        return str(body["spec"]["nodeName"])

    def crash(self, pod: str) -> None:
        """SIGKILL the node; the kubelet restarts the container on the same volume."""
        container = self.container(pod)
        container.process.kill()
        container.process.wait(timeout=10)

    def address(self, store: str, ordinal: int, port: int) -> str:
        return f"{self.ip(store, ordinal)}:{port}"

    def wait_stopped(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._thread is not None and self._thread.is_alive():
            time.sleep(0.05)

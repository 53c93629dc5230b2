"""The operator's checks of tests/operator, on a real cluster (kind): what kmock cannot show.

One 3-node KVStore with a backup volume (e2e/kind/backup-volume.yaml: a hostPath
PersistentVolume, ReadWriteMany, on the folder that every kind node mounts) in a fresh namespace:

* its children exist and the KVStore owns them (the StatefulSet owns the pods);
* a scale-down below the replication factor is refused by the API server itself (the CRD's CEL
  rule), so the spec does not change and the operator never sees it;
* a KVBackup ends Succeeded and verified, with every node's snapshot on the shared volume;
* that backup restores into a new store of another size (4 nodes, reading the volume read-only);
* deleting the KVStore lets the garbage collector remove the StatefulSet,
  Services, ConfigMap and PDB (the data PVCs stay: whenDeleted Retain). This test runs last.

Skipped, with a message, wherever the kind suite is (tests/kind/conftest.py), and on a cluster
made without e2e/kind/kind-config.yaml's backup mount.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from e2e.kind import k8s
from kvnode.testing.processes import free_port, is_serving
from tests.operator.helpers import missing_keys, put_keys
from tests.operator.manifests import kvbackup, kvstore

pytestmark = [pytest.mark.kind, pytest.mark.timeout(3600)]

SRC = "ops"
DST = "ops-restored"
BACKUP = "ops-snap"
KEYS = [b"kind-ops-%04d" % i for i in range(300)]
# The message of the CRD's rule on spec (charts/kvstore/crds/kvstores.kvstore.dev.yaml).
CEL_MESSAGE = "replicationFactor must not exceed replicas"


@dataclass
class Source:
    kubectl: k8s.Kubectl
    store: k8s.Store
    claim: str


@contextlib.contextmanager
def forwarded(kubectl: k8s.Kubectl, pod: str) -> Iterator[str]:
    """``127.0.0.1:<port>`` forwarded to the pod's gRPC port, once its node serves through it."""
    forward = k8s.PortForward(kubectl, pod, free_port()).start()
    try:
        k8s.wait_until(lambda: is_serving(forward.endpoint), 60, f"{pod} to serve via port-forward")
        yield forward.endpoint
    finally:
        forward.stop()


def events(kubectl: k8s.Kubectl, kind: str, name: str, reason: str) -> list[k8s.Body]:
    selector = f"involvedObject.kind={kind},involvedObject.name={name},reason={reason}"
    items: list[k8s.Body] = kubectl.json("events", "--field-selector", selector)["items"]
    return items


def owned_by(body: k8s.Body, kind: str, uid: str) -> bool:
    refs = body["metadata"].get("ownerReferences") or []
    return any(r["kind"] == kind and r["uid"] == uid and r.get("controller") for r in refs)


@pytest.fixture(scope="module")
def source(cluster: str) -> Iterator[Source]:
    """The store, Available with 3 members, holding KEYS, in a namespace of its own."""
    problem = k8s.backup_mount_problem(cluster)
    if problem:
        pytest.skip(f"kind operator tests skipped: {problem}")
    namespace = f"kv-ops-{secrets.token_hex(3)}"
    k8s.run(["kubectl", "--context", cluster, "create", "namespace", namespace])
    kubectl = k8s.Kubectl(cluster, namespace)
    try:
        claim = k8s.apply_backup_volume(kubectl)
        # Each run has its own folder on the shared volume (the host folder outlives clusters).
        kubectl.apply(kvstore(SRC, namespace, backup_claim=claim, backup_path=namespace))
        store = k8s.Store(kubectl, SRC)
        k8s.wait_until(lambda: store.healthy(3), 600, "the KVStore to be Available with 3 Ready members")
        with forwarded(kubectl, store.pod(0)) as endpoint:
            assert put_keys(endpoint, KEYS) == KEYS
        yield Source(kubectl, store, claim)
    finally:
        for name in (DST, SRC):  # while the operator runs, then the namespace
            kubectl("delete", "kvstore", name, "--ignore-not-found", "--wait=true", "--timeout=120s",
                    check=False, timeout=180)  # fmt: skip
        k8s.run(
            ["kubectl", "--context", cluster, "delete", "namespace", namespace, "--wait=false"], check=False
        )
        k8s.delete_backup_volume(kubectl)


@pytest.fixture(scope="module")
def backup(source: Source) -> k8s.Body:
    """A KVBackup of the source store, finished (its status)."""
    kubectl = source.kubectl
    kubectl.apply(kvbackup(BACKUP, kubectl.namespace, SRC))

    def finished() -> bool:
        return kubectl.json("kvbackup", BACKUP).get("status", {}).get("phase") in ("Succeeded", "Failed")

    k8s.wait_until(finished, 600, f"KVBackup {BACKUP} to finish")
    status: k8s.Body = kubectl.json("kvbackup", BACKUP)["status"]
    return status


def test_apply_builds_children_that_the_store_owns(source: Source) -> None:
    kubectl, store = source.kubectl, source.store
    body = store.body()
    uid = body["metadata"]["uid"]
    for kind, name in (
        ("configmap", f"{SRC}-config"),
        ("service", SRC),
        ("service", f"{SRC}-headless"),
        ("statefulset", SRC),
        ("poddisruptionbudget", SRC),
    ):
        assert owned_by(kubectl.json(kind, name), "KVStore", uid), f"{kind}/{name} is not owned by the store"
    sts = kubectl.json("statefulset", SRC)
    assert sts["spec"]["replicas"] == 3
    volumes = sts["spec"]["template"]["spec"]["volumes"]
    assert any((v.get("persistentVolumeClaim") or {}).get("claimName") == source.claim for v in volumes)
    for pod in store.pods():
        assert owned_by(pod, "StatefulSet", sts["metadata"]["uid"]), pod["metadata"]["name"]
    for reason in ("CreatedStatefulSet", "Bootstrapped"):
        assert events(kubectl, "KVStore", SRC, reason), f"no {reason} event"
    assert body["status"]["phase"] == "Running" and body["status"]["membershipEpoch"] >= 1


def test_an_unsafe_scale_down_is_refused_by_the_api_server(source: Source) -> None:
    """replicas 2 < replicationFactor 3: the CEL rule refuses the patch at admission."""
    kubectl, store = source.kubectl, source.store
    before = store.body()
    patch = json.dumps({"spec": {"replicas": 2}})
    result = kubectl.result("patch", "kvstore", SRC, "--type", "merge", "-p", patch)
    assert result.returncode != 0, result.stdout
    assert "is invalid" in result.stderr and CEL_MESSAGE in result.stderr, result.stderr
    after = store.body()
    assert after["spec"]["replicas"] == 3
    assert after["metadata"]["generation"] == before["metadata"]["generation"]  # nothing was stored
    assert not store.events("ScaleDownRefused")  # the operator never saw it
    assert kubectl.json("statefulset", SRC)["spec"]["replicas"] == 3
    assert store.healthy(3)


def test_a_kvbackup_succeeds_verified_on_the_shared_volume(source: Source, backup: k8s.Body) -> None:
    kubectl = source.kubectl
    assert backup["phase"] == "Succeeded" and backup["verified"] is True, backup
    assert backup["problems"] == [] and backup["keys"] == len(KEYS)  # RF 3 of 3: every node has all
    assert backup["claimName"] == source.claim
    assert sorted(n["name"] for n in backup["nodes"]) == [f"{SRC}-{i}" for i in range(3)]
    k8s.wait_until(
        lambda: events(kubectl, "KVBackup", BACKUP, "BackupSucceeded"), 60, "the BackupSucceeded event"
    )
    assert source.store.body()["status"]["lastBackup"]["verified"] is True
    # Pods on different nodes wrote into one folder: the volume really is shared.
    node = k8s.node_of(source.store, 0)
    folder = f"{k8s.BACKUP_MOUNT}/{backup['directory']}/{BACKUP}"
    listed = k8s.run(["docker", "exec", node, "ls", folder]).stdout.split()
    assert sorted(listed) == [f"{SRC}-{i}" for i in range(3)], (folder, listed)


def test_a_backup_restores_into_a_store_of_another_size(source: Source, backup: k8s.Body) -> None:
    """4 nodes from a 3-node backup; without spec.backup the claim is mounted read-only."""
    assert backup["phase"] == "Succeeded", backup
    kubectl = source.kubectl
    kubectl.apply(kvstore(DST, kubectl.namespace, replicas=4, restore_from={"backupName": BACKUP}))
    restored = k8s.Store(kubectl, DST)

    def done() -> bool:
        restore = restored.body().get("status", {}).get("restore") or {}
        return restore.get("phase") == "Succeeded" and restored.healthy(4)

    k8s.wait_until(done, 900, "the new store to be restored and Available with 4 members")
    restore = restored.body()["status"]["restore"]
    assert restore["backupId"] == BACKUP and restore["keys"] == len(KEYS), restore
    for reason in ("RestoreStarted", "Restored"):
        assert events(kubectl, "KVStore", DST, reason), f"no {reason} event"
    with forwarded(kubectl, restored.pod(3)) as endpoint:
        assert missing_keys(endpoint, KEYS) == []


def test_deleting_the_store_removes_its_children(source: Source) -> None:
    """Runs last: it deletes the source store."""
    kubectl, store = source.kubectl, source.store
    kubectl("delete", "kvstore", SRC, "--wait=true", "--timeout=180s", timeout=240)
    assert not kubectl.exists("kvstore", SRC)
    children = [
        ("statefulset", SRC),
        ("service", SRC),
        ("service", f"{SRC}-headless"),
        ("configmap", f"{SRC}-config"),
        ("poddisruptionbudget", SRC),
    ]
    k8s.wait_until(
        lambda: not any(kubectl.exists(kind, name) for kind, name in children),
        180,
        "the garbage collector to delete the store's children",
    )
    k8s.wait_until(lambda: not store.pods(), 180, "the store's pods to be gone")
    claims = {f"data-{SRC}-{i}" for i in range(3)}
    left = {c["metadata"]["name"] for c in kubectl.json("pvc")["items"]}
    assert claims <= left, left  # persistentVolumeClaimRetentionPolicy whenDeleted: Retain

"""Backups and restore with real nodes: a schedule and a KVBackup both produce verified backups,
retention prunes old scheduled ones, and a new store of another size restores a backup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from kvoperator import constants as c
from kvoperator import kube

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc
from kvnode.testing.processes import free_port, wait_for
from tests.operator.conftest import NAMESPACE, OperatorThread
from tests.operator.helpers import (
    events,
    is_available,
    metric,
    missing_keys,
    put_keys,
    reasons,
    store,
    wait_event,
    wait_status,
)
from tests.operator.kubectl import Kubectl
from tests.operator.manifests import kvbackup, kvstore
from tests.operator.sim import ClusterSim

KEYS = [b"backup-%03d" % i for i in range(200)]
DELETED = KEYS[:10]


def backup_status(kubectl: Kubectl, name: str) -> dict[str, object]:
    body = kubectl.get(kube.KVBACKUPS, NAMESPACE, name)
    return dict((body or {}).get("status") or {})


def wait_backup(kubectl: Kubectl, name: str, timeout: float = 60.0) -> dict[str, object]:
    wait_for(
        lambda: backup_status(kubectl, name).get("phase") in ("Succeeded", "Failed"),
        timeout,
        f"KVBackup {name} to finish",
    )
    return backup_status(kubectl, name)


def scheduled(kubectl: Kubectl) -> list[dict[str, Any]]:
    return [
        b
        for b in kubectl.list(kube.KVBACKUPS, NAMESPACE)
        if (b["metadata"].get("labels") or {}).get(c.LABEL_SCHEDULED) == "true"
    ]


def start_scheduled(kubectl: Kubectl, port: int, **backup: Any) -> None:
    """Store "src", backed up every 2 s keeping 2 (``backup``: where to), Available."""
    body = kvstore(
        "src", NAMESPACE, port=port, metrics_port=free_port(), schedule="@every 2s", keep=2, **backup
    )
    kubectl.create(kube.KVSTORES, NAMESPACE, body)
    wait_status(kubectl, "src", lambda s: is_available(s, 3), "Available with 3 members")


def pruned_then_suspended(kubectl: Kubectl) -> list[str]:
    """Wait for retention to prune a scheduled backup, suspend the schedule, check that the
    scheduled backups left are verified (2 kept, perhaps one more since); the pruned ids."""
    wait_for(lambda: "BackupPruned" in reasons(kubectl), 90, "retention to prune a scheduled backup")
    kubectl.patch(kube.KVSTORES, NAMESPACE, "src", {"spec": {"backup": {"suspend": True}}})
    succeeded = [b for b in scheduled(kubectl) if (b.get("status") or {}).get("phase") == "Succeeded"]
    assert 2 <= len(succeeded) <= 3
    assert all(b["status"]["verified"] for b in succeeded)
    return [message.split()[1] for reason, message in events(kubectl) if reason == "BackupPruned"]


def restored(kubectl: Kubectl, replicas: int, **spec: Any) -> tuple[int, dict[str, Any]]:
    """Store "src" deleted, then a new store "dst" of ``replicas`` nodes that restores the backup
    ``spec`` names: its port, and its ``status.restore`` once restored and Available."""
    kubectl.delete(kube.KVSTORES, NAMESPACE, "src")
    wait_for(lambda: not kubectl.list(kube.PODS, NAMESPACE), 60, "the source's pods to go")
    port = free_port()
    body = kvstore("dst", NAMESPACE, replicas=replicas, port=port, metrics_port=free_port(), **spec)
    kubectl.create(kube.KVSTORES, NAMESPACE, body)
    status = wait_status(
        kubectl,
        "dst",
        lambda s: is_available(s, replicas) and (s.get("restore") or {}).get("phase") == "Succeeded",
        f"restored and Available with {replicas} members",
        timeout=90,
    )
    return port, dict(status["status"]["restore"])


def test_scheduled_and_on_demand_backups_are_verified_and_pruned(
    kubectl: Kubectl, sim: ClusterSim, operator: OperatorThread, tmp_path: Path
) -> None:
    port = free_port()
    start_scheduled(kubectl, port, backup_claim="backups")
    acked = put_keys(sim.address("src", 0, port), KEYS)

    # On demand.
    kubectl.create(kube.KVBACKUPS, NAMESPACE, kvbackup("manual", NAMESPACE, "src"))
    status = wait_backup(kubectl, "manual")
    assert status["phase"] == "Succeeded" and status["verified"] is True, status
    assert status["problems"] == [] and status["keys"] == len(KEYS)  # RF 3 of 3: each node has every key
    nodes = status["nodes"]
    assert [n["name"] for n in nodes] == ["src-0", "src-1", "src-2"]  # type: ignore[attr-defined]
    folder = Path(operator.config.backup_path) / "src" / "manual"
    assert sorted(p.name for p in folder.iterdir()) == ["src-0", "src-1", "src-2"]
    assert all(
        (folder / n / "manifest.json").exists() and (folder / n / "data.mdb").exists()
        for n in ("src-0", "src-2")
    )
    wait_event(kubectl, "BackupSucceeded", kind="KVBackup", name="manual")

    # On the schedule, with retention keeping 2.
    pruned = pruned_then_suspended(kubectl)
    on_disk = {p.name for p in (Path(operator.config.backup_path) / "src").iterdir()}
    assert pruned and not set(pruned) & on_disk  # the pruned data is gone from the volume
    assert "manual" in on_disk  # on-demand backups are not pruned
    last = store(kubectl, "src")["status"]["lastBackup"]
    assert last["verified"] is True
    listen = operator.config.metrics_listen
    assert metric(listen, "kvstore_operator_backups_total", store="src", result="succeeded") >= 3
    assert metric(listen, "kvstore_operator_backups_pruned_total", store="src") >= 1
    assert missing_keys(sim.address("src", 0, port), acked) == []


def test_a_backup_restores_into_a_new_store_of_another_size(
    kubectl: Kubectl, sim: ClusterSim, operator: OperatorThread
) -> None:
    port = free_port()
    kubectl.create(
        kube.KVSTORES,
        NAMESPACE,
        kvstore("src", NAMESPACE, port=port, metrics_port=free_port(), backup_claim="backups"),
    )
    wait_status(kubectl, "src", lambda s: is_available(s, 3), "Available with 3 members")
    acked = put_keys(sim.address("src", 0, port), KEYS)
    with grpc.insecure_channel(sim.address("src", 1, port)) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        for key in DELETED:
            stub.Delete(kv_pb2.DeleteRequest(key=key), timeout=10)
    kubectl.create(kube.KVBACKUPS, NAMESPACE, kvbackup("snap", NAMESPACE, "src"))
    assert wait_backup(kubectl, "snap")["verified"] is True

    # The source goes away (its backup stays on the volume); a store of 4 restores it.
    dst_port, restore = restored(kubectl, 4, backup_claim="backups", restore_from={"backupName": "snap"})
    assert restore["backupId"] == "snap" and restore["keys"] == len(KEYS) - len(DELETED)
    wait_event(kubectl, "RestoreStarted", name="dst")
    wait_event(kubectl, "Restored", name="dst")
    live = [k for k in acked if k not in DELETED]
    assert missing_keys(sim.address("dst", 3, dst_port), live) == []
    with grpc.insecure_channel(sim.address("dst", 2, dst_port)) as channel:
        reply = kv_pb2_grpc.KVStub(channel).BatchGet(kv_pb2.BatchGetRequest(keys=DELETED), timeout=10)
    assert not any(kv.found for kv in reply.kvs)  # deletes are restored too

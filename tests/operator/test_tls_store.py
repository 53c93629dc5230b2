"""A store with TLS on, with real nodes: the operator makes its CA and certificates, the node
starts with them from the mounted Secret and takes a certificate issued again without a restart,
and the operator reconciles it, takes and verifies a backup, and restores it into a new store, all
as ``kvstore:admin`` over mutual TLS. Applications
use the ``<store>-client-<role>`` Secrets; a client without a certificate gets nowhere.

A store of three then scales with peer mTLS: its simulated pods are addressed by loopback IPs,
which no node certificate names, so nodes check their peers' certificates for the store's Service
name (``--peer-server-name``), as in pod-IP addressing on a real cluster.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from kvoperator import kube

from kvnode.client import Credentials, KVClient
from kvnode.core.errors import KVError, PermissionDenied
from kvnode.testing.processes import free_port, wait_for
from kvnode.testing.tls import served_certificate
from tests.operator.conftest import NAMESPACE, OperatorThread
from tests.operator.helpers import is_available, wait_status
from tests.operator.kubectl import Kubectl
from tests.operator.manifests import kvbackup, kvstore
from tests.operator.sim import ClusterSim
from tests.operator.test_backup_restore import wait_backup

KEYS = [b"tls-%03d" % i for i in range(50)]


def secret_files(kubectl: Kubectl, secret: str) -> dict[str, bytes]:
    body = kubectl.get(kube.SECRETS, NAMESPACE, secret)
    assert body is not None, f"no Secret {secret}"
    return {k: base64.b64decode(v) for k, v in body["data"].items()}


def identity(kubectl: Kubectl, secret: str) -> Credentials:
    """An application's identity from a Secret, as a pod mounting it would read the files."""
    data = secret_files(kubectl, secret)
    return Credentials(ca=data["ca.crt"], cert=data["tls.crt"], key=data["tls.key"], server_name="localhost")


def renewed_in_place(kubectl: Kubectl, sim: ClusterSim, address: str, folder: Path) -> None:
    """The node certificate issued again (its Secret deleted: the operator issues a new one) reaches
    the running node through its mounted files: new connections get it, with no restart."""
    folder.mkdir()
    for name, data in secret_files(kubectl, "sec-client-read").items():
        (folder / name).write_bytes(data)
    client = (folder / "tls.crt", folder / "tls.key")
    before = served_certificate(address, folder / "ca.crt", client)
    process = sim.container("sec-0").process
    kubectl.delete(kube.SECRETS, NAMESPACE, "sec-node-tls")
    wait_for(
        lambda: served_certificate(address, folder / "ca.crt", client) != before,
        90,
        "the node to serve its new certificate",
    )
    assert sim.container("sec-0").process is process and process.poll() is None


def one_node_tls_store(name: str, port: int, **extra: Any) -> dict[str, Any]:
    metrics = free_port()
    return kvstore(
        name, NAMESPACE, replicas=1, replication_factor=1, port=port, metrics_port=metrics, tls=True, **extra
    )


def test_a_tls_store_is_served_backed_up_and_restored_over_mutual_tls(
    kubectl: Kubectl, sim: ClusterSim, operator: OperatorThread, tmp_path: Path
) -> None:
    port = free_port()
    kubectl.create(kube.KVSTORES, NAMESPACE, one_node_tls_store("sec", port, backup_claim="backups"))
    wait_status(kubectl, "sec", lambda s: is_available(s, 1), "Available over TLS", timeout=90)
    assert kubectl.get(kube.NETWORK_POLICIES, NAMESPACE, "sec") is not None
    address = sim.address("sec", 0, port)

    with KVClient([address], credentials=identity(kubectl, "sec-client-write"), timeout=10) as writer:
        for key in KEYS:
            writer.put(key, key)
    with KVClient([address], credentials=identity(kubectl, "sec-client-read"), timeout=10) as reader:
        entry = reader.get(KEYS[0])
        assert entry is not None and entry.value == KEYS[0]
        with pytest.raises(PermissionDenied):
            reader.put(b"not-mine", b"x")
    with KVClient([address], timeout=3, retries=0) as anonymous, pytest.raises(KVError):
        anonymous.get(KEYS[0])
    renewed_in_place(kubectl, sim, address, tmp_path / "client")

    kubectl.create(kube.KVBACKUPS, NAMESPACE, kvbackup("sec-snap", NAMESPACE, "sec"))
    status = wait_backup(kubectl, "sec-snap", timeout=90)
    assert status["phase"] == "Succeeded" and status["verified"] is True, status

    copy_port = free_port()
    copy = one_node_tls_store("sec-copy", copy_port, restore_from={"backupName": "sec-snap"})
    kubectl.create(kube.KVSTORES, NAMESPACE, copy)
    wait_status(
        kubectl,
        "sec-copy",
        lambda s: is_available(s, 1) and (s.get("restore") or {}).get("phase") == "Succeeded",
        "restored over TLS",
        timeout=120,
    )
    copy_address = sim.address("sec-copy", 0, copy_port)
    # Its own CA: the original store's client certificate is not trusted there.
    foreign = identity(kubectl, "sec-client-read")
    with KVClient([copy_address], credentials=foreign, timeout=3) as other, pytest.raises(KVError):
        other.get(KEYS[0])
    own = identity(kubectl, "sec-copy-client-read")
    with KVClient([copy_address], credentials=own, timeout=10) as reader:

        def restored() -> bool:
            return all((e := reader.get(k)) is not None and e.value == k for k in KEYS)

        wait_for(restored, 30, "every key restored")


def test_a_tls_store_of_three_replicates_over_peer_mtls_and_scales(
    kubectl: Kubectl, sim: ClusterSim, operator: OperatorThread
) -> None:
    port = free_port()
    trio = kvstore("trio", NAMESPACE, replicas=3, port=port, metrics_port=free_port(), tls=True)
    kubectl.create(kube.KVSTORES, NAMESPACE, trio)
    wait_status(kubectl, "trio", lambda s: is_available(s, 3), "3 members over TLS", timeout=120)
    with KVClient([sim.address("trio", 0, port)], credentials=identity(kubectl, "trio-client-write")) as kv:
        for key in KEYS:
            kv.put(key, key, consistency="ALL")  # every replica, over the peer ports

    kubectl.patch(kube.KVSTORES, NAMESPACE, "trio", {"spec": {"replicas": 4}})
    wait_status(kubectl, "trio", lambda s: is_available(s, 4), "4 members over TLS", timeout=120)
    reader = identity(kubectl, "trio-client-read")
    with KVClient([sim.address("trio", 3, port)], credentials=reader, route=False, timeout=10) as kv:
        assert all((e := kv.get(k, consistency="ALL")) is not None and e.value == k for k in KEYS)

    kubectl.patch(kube.KVSTORES, NAMESPACE, "trio", {"spec": {"replicas": 3}})
    wait_status(kubectl, "trio", lambda s: is_available(s, 3), "back to 3 members", timeout=120)
    with KVClient([sim.address("trio", 0, port)], credentials=reader, route=False, timeout=10) as kv:
        assert all((e := kv.get(k, consistency="ALL")) is not None and e.value == k for k in KEYS)

"""Sample KVStore and KVBackup manifests, shared by the kmock tests and the kind suite (e2e/kind)."""

from __future__ import annotations

import base64
from typing import Any

from kvnode.testing.processes import free_port

API_VERSION = "kvstore.dev/v1alpha1"


def kvstore(
    name: str,
    namespace: str,
    *,
    replicas: int = 3,
    replication_factor: int = 3,
    partitions: int = 16,
    port: int = 7000,
    metrics_port: int = 9100,
    peer_port: int = 0,
    backup_claim: str | None = None,
    backup_path: str | None = None,
    schedule: str | None = None,
    keep: int | None = None,
    restore_from: dict[str, Any] | None = None,
    object_store: dict[str, Any] | None = None,
    image: str | None = None,
    storage_size: str = "1Gi",
    tls: bool = False,
) -> dict[str, Any]:
    """A store; ``tls`` off unless asked. The kmock tests address pods by IP, which no node
    certificate names (the operator's is a wildcard over the pods' DNS names), and nodes check
    their peers' names: a TLS store of several nodes needs DNS addressing (kind)."""
    spec: dict[str, Any] = {
        "replicas": replicas,
        "replicationFactor": replication_factor,
        "partitions": partitions,
        "port": port,
        "metricsPort": metrics_port,
        # 0: a free port here, like the tests' client ports: the simulated pods share this host's
        # ports, where another process may hold the default 7001.
        "peerPort": peer_port or free_port(),
        "storage": {"size": storage_size},
        "tls": {"enabled": tls},
    }
    if image:
        spec["image"] = image
    if backup_claim or object_store:
        backup: dict[str, Any] = (
            {"objectStore": object_store} if object_store else {"volume": {"claimName": backup_claim}}
        )
        if backup_path:
            backup["path"] = backup_path
        if schedule:
            backup["schedule"] = schedule
        if keep is not None:
            backup["retention"] = {"keep": keep}
        spec["backup"] = backup
    if restore_from:
        spec["restoreFrom"] = restore_from
    return {
        "apiVersion": API_VERSION,
        "kind": "KVStore",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def kvbackup(name: str, namespace: str, store: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "KVBackup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"storeName": store},
    }


def secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    """A Secret holding ``data`` (encoded as the API wants it)."""
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": encoded,
    }

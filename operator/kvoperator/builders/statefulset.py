"""The StatefulSet that runs a store's nodes: one pod, one LMDB volume per node."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvoperator import constants as c
from kvoperator import names
from kvoperator.builders.bucket_access import bucket_access
from kvoperator.builders.common import Body, child_metadata, stamp_hash
from kvoperator.builders.node_security import probe_checks, security_env, tls_mounts, tls_volumes
from kvoperator.config import AddressMode, OperatorConfig
from kvoperator.spec import StoreSpec

NODE_UID = 10001
TERMINATION_GRACE_SECONDS = 30
# gRPC probes: the kubelet's 1 s default fails a probe on a node that is busy committing a large
# batch, and readiness flaps under load; 5 s is still well inside the probe periods.
PROBE_TIMEOUT_SECONDS = 5


def _field_env(name: str, path: str) -> Body:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def node_env(store: str, spec: StoreSpec, config: OperatorConfig) -> list[Body]:
    """The node's settings, as the ``KVNODE_*`` variables that ``kvnode`` reads."""
    suffix = f"svc.{config.cluster_domain}" if config.cluster_domain else "svc"
    if config.address_mode is AddressMode.POD_IP:
        host = "$(POD_IP)"
    else:
        host = f"$(POD_NAME).{names.headless_service(store)}.$(POD_NAMESPACE).{suffix}"
    advertise = f"{host}:{spec.port}"
    return [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("POD_IP", "status.podIP"),
        {"name": "KVNODE_NODE_ID", "value": "$(POD_NAME)"},
        {"name": "KVNODE_LISTEN", "value": f"0.0.0.0:{spec.port}"},
        {"name": "KVNODE_ADVERTISE", "value": advertise},
        {
            "name": "KVNODE_PEERS",
            "valueFrom": {"configMapKeyRef": {"name": names.configmap(store), "key": c.CONFIG_KEY_PEERS}},
        },
        {"name": "KVNODE_DATA_DIR", "value": config.data_path},
        {"name": "KVNODE_METRICS_LISTEN", "value": f"0.0.0.0:{spec.metrics_port}"},
        {"name": "KVNODE_REPLICATION_FACTOR", "value": str(spec.replication_factor)},
        {"name": "KVNODE_PARTITIONS", "value": str(spec.partitions)},
        {"name": "KVNODE_DEFAULT_CONSISTENCY", "value": spec.default_consistency},
        *security_env(store, spec, config, host),
    ]


def _affinity(store: str, spec: StoreSpec) -> Body | None:
    term = {
        "labelSelector": {"matchLabels": names.selector_labels(store)},
        "topologyKey": spec.anti_affinity.topology_key,
    }
    if spec.anti_affinity.mode == "Required":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    if spec.anti_affinity.mode == "Preferred":
        return {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
            }
        }
    return None


TMP_VOLUME = "tmp"


def build_statefulset(
    owner: Mapping[str, Any],
    spec: StoreSpec,
    replicas: int,
    config: OperatorConfig,
    *,
    restore_claim: str | None = None,
) -> Body:
    """The StatefulSet with ``replicas`` pods. ``restore_claim`` mounts the volume of the backup
    that ``spec.restoreFrom`` names, when it is not the store's own backup volume."""
    store = owner["metadata"]["name"]
    mounts: list[Body] = [{"name": c.DATA_VOLUME, "mountPath": config.data_path}, *tls_mounts(spec)]
    volumes: list[Body] = tls_volumes(store, spec)
    if spec.backup is not None and spec.backup.claim_name:
        volumes.append(
            {"name": c.BACKUP_VOLUME, "persistentVolumeClaim": {"claimName": spec.backup.claim_name}}
        )
        mounts.append({"name": c.BACKUP_VOLUME, "mountPath": config.backup_path})
    if restore_claim and (spec.backup is None or restore_claim != spec.backup.claim_name):
        volumes.append(
            {
                "name": c.RESTORE_VOLUME,
                "persistentVolumeClaim": {"claimName": restore_claim, "readOnly": True},
            }
        )
        mounts.append({"name": c.RESTORE_VOLUME, "mountPath": config.restore_path, "readOnly": True})
    bucket = bucket_access(spec)
    volumes += bucket.volumes
    mounts += bucket.mounts
    ready_check, alive_check = probe_checks(spec)
    container: Body = {
        "name": c.CONTAINER_NAME,
        "image": spec.image or config.node_image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["kvnode"],
        "env": node_env(store, spec, config) + bucket.env,
        "ports": [
            {"name": "grpc", "containerPort": spec.port, "protocol": "TCP"},
            {"name": "peer", "containerPort": spec.peer_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": spec.metrics_port, "protocol": "TCP"},
        ],
        # Ready = the node serves ("" is NOT_SERVING while it rebuilds a lost volume from its peers).
        "readinessProbe": {
            **ready_check,
            "periodSeconds": 5,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            "failureThreshold": 3,
        },
        # Alive = the process answers at all; a rebuilding node is alive, just not ready.
        "livenessProbe": {
            **alive_check,
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            "failureThreshold": 6,
        },
        "resources": dict(spec.resources),
        "volumeMounts": [*mounts, {"name": TMP_VOLUME, "mountPath": "/tmp"}],
        # kvnode writes only to its volumes (data, backups) and /tmp (backup verification's scratch
        # store), so the image's filesystem can be read-only.
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    # Backup verification copies a snapshot into /tmp: a snapshot is at most the data volume, so
    # that bounds the scratch space. Past it the kubelet evicts this pod alone, instead of the
    # node's disk filling up and every pod on it being evicted.
    volumes.append({"name": TMP_VOLUME, "emptyDir": {"sizeLimit": spec.storage.size}})
    pod_spec: Body = {
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NODE_UID,
            "runAsGroup": NODE_UID,
            "fsGroup": NODE_UID,
            # Chown the volume only when its root is not the group's yet: not the whole LMDB volume
            # at every pod start (minutes on a large EBS or PD volume).
            "fsGroupChangePolicy": "OnRootMismatch",
        },
        "containers": [container],
        # Nodes never call the Kubernetes API: no token in the pod for an intruder to use.
        "automountServiceAccountToken": False,
    }
    if bucket.env_from:
        container["envFrom"] = bucket.env_from
    if bucket.service_account:
        pod_spec["serviceAccountName"] = bucket.service_account
    if volumes:
        pod_spec["volumes"] = volumes
    affinity = _affinity(store, spec)
    if affinity:
        pod_spec["affinity"] = affinity
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    claim_spec: Body = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage.size}},
    }
    if spec.storage.storage_class_name:
        claim_spec["storageClassName"] = spec.storage.storage_class_name
    sts_spec: Body = {
        "serviceName": names.headless_service(store),
        # Parallel: a new node waits for a peer before it serves, so pods must not wait for each other.
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "RollingUpdate"},
        "selector": {"matchLabels": names.selector_labels(store)},
        "template": {
            "metadata": {
                "labels": names.labels(store),
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(spec.metrics_port),
                },
            },
            "spec": pod_spec,
        },
        "volumeClaimTemplates": [
            {"metadata": {"name": c.DATA_VOLUME, "labels": names.labels(store)}, "spec": claim_spec}
        ],
        "persistentVolumeClaimRetentionPolicy": {
            "whenDeleted": "Delete" if spec.storage.delete_claims_on_delete else "Retain",
            "whenScaled": "Delete" if spec.storage.delete_claims_on_scale_down else "Retain",
        },
    }
    body: Body = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": child_metadata(owner, names.statefulset(store)),
        "spec": sts_spec,
    }
    stamp_hash(body, sts_spec)  # the hash leaves replicas out: the membership step owns that number
    body["spec"] = {**sts_spec, "replicas": replicas}
    return body

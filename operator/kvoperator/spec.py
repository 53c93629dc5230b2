"""The KVStore and KVBackup specs as typed values, with the CRD's defaults applied.

The API server applies the CRD's defaults on a real cluster; parsing applies the same ones again,
so the operator behaves the same against a server that does not (and the two lists of defaults are
checked against each other in tests/operator/test_crds.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CONSISTENCY_LEVELS = ("ONE", "QUORUM", "ALL", "LINEARIZABLE")
ANTI_AFFINITY_MODES = ("None", "Preferred", "Required")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_PATH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)*$")


class SpecError(ValueError):
    """A spec the operator cannot act on; the message names the field."""


@dataclass(frozen=True)
class StorageSpec:
    size: str = "10Gi"
    storage_class_name: str | None = None
    delete_claims_on_scale_down: bool = False
    delete_claims_on_delete: bool = False


@dataclass(frozen=True)
class AntiAffinitySpec:
    mode: str = "Preferred"
    topology_key: str = "kubernetes.io/hostname"


@dataclass(frozen=True)
class PDBSpec:
    enabled: bool = True
    max_unavailable: int = 1


@dataclass(frozen=True)
class ObjectStoreSpec:
    """A bucket for backups. The nodes read credentials as the AWS SDKs do: from the Secret's
    ``AWS_*`` keys, or from the pods' service account (workload identity: IRSA and the like)."""

    bucket: str
    hmac_key_secret: str  # a Secret whose key ``hmac-key`` signs the manifests
    prefix: str = ""  # empty: the store's name
    endpoint: str = ""  # empty: AWS S3 itself
    region: str = ""
    credentials_secret: str = ""
    service_account_name: str = ""
    encryption_key_secret: str = ""  # a Secret whose ``encryption-key`` (64 hex digits) encrypts snapshots

    def url(self, store_name: str) -> str:
        return f"s3://{self.bucket}/{(self.prefix or store_name).strip('/')}"


@dataclass(frozen=True)
class BackupSpec:
    claim_name: str = ""  # the volume's; empty with an object store
    object_store: ObjectStoreSpec | None = None
    schedule: str = ""
    keep: int = 7
    path: str = ""  # folder inside the volume; empty: the store's name
    suspend: bool = False


@dataclass(frozen=True)
class RestoreSpec:
    backup_name: str = ""  # a KVBackup in the store's namespace
    backup_id: str = ""
    claim_name: str = ""
    path: str = ""
    url: str = ""  # a bucket's backups, s3://BUCKET/PREFIX (read with spec.backup.objectStore's access)


@dataclass(frozen=True)
class IssuerRef:
    """A cert-manager issuer that makes the store's certificates instead of the operator's CA."""

    name: str
    kind: str = "Issuer"  # or ClusterIssuer
    group: str = "cert-manager.io"


@dataclass(frozen=True)
class TLSSpec:
    """TLS on the node's client, peer and metrics ports; on unless the spec turns it off."""

    enabled: bool = True
    issuer_ref: IssuerRef | None = None


@dataclass(frozen=True)
class NetworkPolicySpec:
    """Who may reach which port of the store's pods. Selectors are Kubernetes label selectors;
    an empty ``client_namespaces`` and ``client_pods`` mean the store's own namespace."""

    enabled: bool = True
    client_pods: Mapping[str, Any] | None = None
    client_namespaces: Mapping[str, Any] | None = None
    metrics_namespaces: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreSpec:
    """A KVStore's spec, with the CRD's defaults applied."""

    replicas: int = 3
    replication_factor: int = 3
    partitions: int = 1024
    image: str = ""
    image_pull_policy: str = "IfNotPresent"
    port: int = 7000
    peer_port: int = 7001
    metrics_port: int = 9100
    default_consistency: str = "QUORUM"
    resources: Mapping[str, Any] = field(default_factory=dict)
    storage: StorageSpec = field(default_factory=StorageSpec)
    anti_affinity: AntiAffinitySpec = field(default_factory=AntiAffinitySpec)
    pdb: PDBSpec = field(default_factory=PDBSpec)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    backup: BackupSpec | None = None
    restore_from: RestoreSpec | None = None
    tls: TLSSpec = field(default_factory=TLSSpec)
    network_policy: NetworkPolicySpec = field(default_factory=NetworkPolicySpec)

    def backup_dir(self, store_name: str) -> str:
        """The backup folder, relative to the backup volume's root."""
        return (self.backup.path if self.backup and self.backup.path else store_name).strip("/")


def _int(data: Mapping[str, Any], key: str, default: int, path: str, low: int, high: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{path}.{key} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise SpecError(f"{path}.{key} must be between {low} and {high}, not {value}")
    return value


def _str(data: Mapping[str, Any], key: str, default: str, path: str) -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise SpecError(f"{path}.{key} must be a string, not {value!r}")
    return value


def _bool(data: Mapping[str, Any], key: str, default: bool, path: str) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise SpecError(f"{path}.{key} must be true or false, not {value!r}")
    return value


def _choice(data: Mapping[str, Any], key: str, default: str, path: str, choices: tuple[str, ...]) -> str:
    value = _str(data, key, default, path)
    if value not in choices:
        raise SpecError(f"{path}.{key} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _map(data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{path}.{key} must be an object")
    return value


def parse_store_spec(spec: Mapping[str, Any] | None) -> StoreSpec:
    """A KVStore's spec with defaults; raises SpecError naming the first bad field."""
    spec = spec or {}
    p = "spec"
    replicas = _int(spec, "replicas", 3, p, 1, 1000)
    rf = _int(spec, "replicationFactor", 3, p, 1, 15)
    storage = _map(spec, "storage", p)
    size = _str(storage, "size", "10Gi", "spec.storage")
    if not _QUANTITY.match(size):
        raise SpecError(f"spec.storage.size must be a quantity like 10Gi, not {size!r}")
    anti = _map(spec, "podAntiAffinity", p)
    pdb = _map(spec, "podDisruptionBudget", p)
    return StoreSpec(
        replicas=replicas,
        replication_factor=rf,
        partitions=_int(spec, "partitions", 1024, p, 1, 65535),
        image=_str(spec, "image", "", p),
        image_pull_policy=_choice(spec, "imagePullPolicy", "IfNotPresent", p, PULL_POLICIES),
        port=_int(spec, "port", 7000, p, 1, 65535),
        peer_port=_int(spec, "peerPort", 7001, p, 1, 65535),
        metrics_port=_int(spec, "metricsPort", 9100, p, 1, 65535),
        default_consistency=_choice(spec, "defaultConsistency", "QUORUM", p, CONSISTENCY_LEVELS),
        resources=dict(_map(spec, "resources", p)),
        storage=StorageSpec(
            size=size,
            storage_class_name=_str(storage, "storageClassName", "", "spec.storage") or None,
            delete_claims_on_scale_down=_bool(storage, "deleteClaimsOnScaleDown", False, "spec.storage"),
            delete_claims_on_delete=_bool(storage, "deleteClaimsOnDelete", False, "spec.storage"),
        ),
        anti_affinity=AntiAffinitySpec(
            mode=_choice(anti, "mode", "Preferred", "spec.podAntiAffinity", ANTI_AFFINITY_MODES),
            topology_key=_str(anti, "topologyKey", "kubernetes.io/hostname", "spec.podAntiAffinity"),
        ),
        pdb=PDBSpec(
            enabled=_bool(pdb, "enabled", True, "spec.podDisruptionBudget"),
            max_unavailable=_int(pdb, "maxUnavailable", 1, "spec.podDisruptionBudget", 1, 1000),
        ),
        node_selector={str(k): str(v) for k, v in _map(spec, "nodeSelector", p).items()},
        tolerations=tuple(spec.get("tolerations") or ()),
        backup=_parse_backup(spec.get("backup")),
        restore_from=_parse_restore(spec.get("restoreFrom")),
        tls=_parse_tls(_map(spec, "tls", p)),
        network_policy=_parse_network_policy(_map(spec, "networkPolicy", p)),
    )


ISSUER_KINDS = ("Issuer", "ClusterIssuer")


def _parse_tls(data: Mapping[str, Any]) -> TLSSpec:
    p = "spec.tls"
    ref = _map(data, "issuerRef", p)
    issuer = None
    if ref:
        name = _str(ref, "name", "", f"{p}.issuerRef")
        if not name:
            raise SpecError(f"{p}.issuerRef.name is required")
        issuer = IssuerRef(
            name=name,
            kind=_choice(ref, "kind", "Issuer", f"{p}.issuerRef", ISSUER_KINDS),
            group=_str(ref, "group", "cert-manager.io", f"{p}.issuerRef"),
        )
    return TLSSpec(enabled=_bool(data, "enabled", True, p), issuer_ref=issuer)


def _selector(data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
    return dict(_map(data, key, path)) if data.get(key) is not None else None


def _parse_network_policy(data: Mapping[str, Any]) -> NetworkPolicySpec:
    p = "spec.networkPolicy"
    return NetworkPolicySpec(
        enabled=_bool(data, "enabled", True, p),
        client_pods=_selector(data, "clientPodSelector", p),
        client_namespaces=_selector(data, "clientNamespaceSelector", p),
        metrics_namespaces=dict(_map(data, "metricsNamespaceSelector", p)),
    )


def _parse_backup(data: Any) -> BackupSpec | None:
    if not data:
        return None
    p = "spec.backup"
    if not isinstance(data, Mapping):
        raise SpecError(f"{p} must be an object")
    volume = _map(data, "volume", p)
    claim = _str(volume, "claimName", "", f"{p}.volume")
    object_store = _parse_object_store(data.get("objectStore"))
    if bool(claim) == (object_store is not None):
        raise SpecError(f"{p} needs exactly one of volume.claimName or objectStore")
    retention = _map(data, "retention", p)
    path = _str(data, "path", "", p)
    if path and not _PATH.match(path.strip("/")):
        raise SpecError(f"{p}.path must be a relative folder like 'stores/demo', not {path!r}")
    return BackupSpec(
        claim_name=claim,
        object_store=object_store,
        schedule=_str(data, "schedule", "", p).strip(),
        keep=_int(retention, "keep", 7, f"{p}.retention", 1, 10000),
        path=path,
        suspend=_bool(data, "suspend", False, p),
    )


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def _parse_object_store(data: Any) -> ObjectStoreSpec | None:
    if not data:
        return None
    p = "spec.backup.objectStore"
    if not isinstance(data, Mapping):
        raise SpecError(f"{p} must be an object")
    bucket = _str(data, "bucket", "", p)
    if not _BUCKET.match(bucket):
        raise SpecError(f"{p}.bucket must be an S3 bucket name, not {bucket!r}")
    prefix = _str(data, "prefix", "", p)
    if prefix and not _PATH.match(prefix.strip("/")):
        raise SpecError(f"{p}.prefix must be a relative path like 'stores/demo', not {prefix!r}")
    hmac_secret = _str(_map(data, "hmacKeySecret", p), "name", "", f"{p}.hmacKeySecret")
    if not hmac_secret:
        raise SpecError(f"{p}.hmacKeySecret.name is required (the Secret whose hmac-key signs manifests)")
    return ObjectStoreSpec(
        bucket=bucket,
        hmac_key_secret=hmac_secret,
        prefix=prefix,
        endpoint=_str(data, "endpoint", "", p),
        region=_str(data, "region", "", p),
        credentials_secret=_str(_map(data, "credentialsSecret", p), "name", "", f"{p}.credentialsSecret"),
        service_account_name=_str(data, "serviceAccountName", "", p),
        encryption_key_secret=_str(
            _map(data, "encryptionKeySecret", p), "name", "", f"{p}.encryptionKeySecret"
        ),
    )


def _parse_restore(data: Any) -> RestoreSpec | None:
    if not data:
        return None
    p = "spec.restoreFrom"
    if not isinstance(data, Mapping):
        raise SpecError(f"{p} must be an object")
    restore = RestoreSpec(
        backup_name=_str(data, "backupName", "", p),
        backup_id=_str(data, "backupId", "", p),
        claim_name=_str(data, "claimName", "", p),
        path=_str(data, "path", "", p),
        url=_str(data, "url", "", p),
    )
    if bool(restore.backup_name) == bool(restore.backup_id):
        raise SpecError(f"{p} needs exactly one of backupName or backupId")
    if restore.url and not restore.url.startswith("s3://"):
        raise SpecError(f"{p}.url must be a bucket URL like s3://bucket/prefix, not {restore.url!r}")
    if restore.backup_id and not (restore.claim_name and restore.path) and not restore.url:
        raise SpecError(
            f"{p}.backupId needs claimName and path (the backup's volume and folder), or url (its bucket)"
        )
    return restore


@dataclass(frozen=True)
class BackupRequestSpec:
    """A KVBackup's spec."""

    store_name: str


def parse_backup_spec(spec: Mapping[str, Any] | None) -> BackupRequestSpec:
    spec = spec or {}
    store = _str(spec, "storeName", "", "spec")
    if not store:
        raise SpecError("spec.storeName is required")
    return BackupRequestSpec(store_name=store)

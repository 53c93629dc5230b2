"""The child manifests, built as pure functions."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from kvoperator import constants as c
from kvoperator import names
from kvoperator.builders.backup import build_scheduled_backup
from kvoperator.builders.common import hash_of
from kvoperator.builders.config import build_configmap
from kvoperator.builders.pdb import build_pdb
from kvoperator.builders.services import build_client_service, build_headless_service
from kvoperator.builders.statefulset import build_statefulset
from kvoperator.config import AddressMode, OperatorConfig
from kvoperator.names import member_address, ordinal_of
from kvoperator.spec import parse_store_spec

OWNER: dict[str, Any] = {
    "apiVersion": "kvstore.dev/v1alpha1",
    "kind": "KVStore",
    "metadata": {"name": "demo", "namespace": "shop", "uid": "uid-1"},
}
CONFIG = OperatorConfig()


def env(sts: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_statefulset() -> None:
    spec = parse_store_spec(
        {"replicas": 5, "storage": {"size": "20Gi", "storageClassName": "fast"}, "tls": {"enabled": False}}
    )
    sts = build_statefulset(OWNER, spec, 5, CONFIG)
    assert sts["metadata"]["ownerReferences"] == [
        {"apiVersion": "kvstore.dev/v1alpha1", "kind": "KVStore", "name": "demo", "uid": "uid-1",
         "controller": True}
    ]  # fmt: skip
    s = sts["spec"]
    assert (
        s["replicas"] == 5 and s["podManagementPolicy"] == "Parallel" and s["serviceName"] == "demo-headless"
    )
    assert s["selector"] == {
        "matchLabels": {c.LABEL_NAME: "kvstore", c.LABEL_INSTANCE: "demo", c.LABEL_COMPONENT: "node"}
    }
    claim = s["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "20Gi"}},
        "storageClassName": "fast",
    }
    e = env(sts)
    assert e["KVNODE_NODE_ID"]["value"] == "$(POD_NAME)"
    assert e["KVNODE_ADVERTISE"]["value"] == "$(POD_NAME).demo-headless.$(POD_NAMESPACE).svc:7000"
    assert e["KVNODE_PEERS"]["valueFrom"]["configMapKeyRef"] == {"name": "demo-config", "key": "peers"}
    assert e["KVNODE_REPLICATION_FACTOR"]["value"] == "3"
    container = s["template"]["spec"]["containers"][0]
    assert container["image"] == CONFIG.node_image
    assert container["livenessProbe"]["grpc"]["service"] == "kvnode.api.v1.Admin"
    # no backup volume unless asked: only /tmp, which a read-only root filesystem needs
    # (bounded by the data volume's size: backup verification copies a snapshot into it)
    assert s["template"]["spec"]["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "20Gi"}}]
    assert s["template"]["spec"]["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert container["readinessProbe"]["timeoutSeconds"] == container["livenessProbe"]["timeoutSeconds"] == 5
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    affinity = s["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"][
        "topologyKey"
    ] == ("kubernetes.io/hostname")


def test_statefulset_hash_ignores_replicas_but_not_the_template() -> None:
    spec = parse_store_spec({})
    three, five = build_statefulset(OWNER, spec, 3, CONFIG), build_statefulset(OWNER, spec, 5, CONFIG)
    assert hash_of(three) == hash_of(five)
    other = build_statefulset(OWNER, parse_store_spec({"image": "kvstore:9"}), 3, CONFIG)
    assert hash_of(other) != hash_of(three)


def test_backup_and_restore_volumes() -> None:
    spec = parse_store_spec({"backup": {"volume": {"claimName": "bk"}}, "tls": {"enabled": False}})
    pod = build_statefulset(OWNER, spec, 3, CONFIG, restore_claim="old")["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "backups", "persistentVolumeClaim": {"claimName": "bk"}},
        {"name": "restore", "persistentVolumeClaim": {"claimName": "old", "readOnly": True}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "10Gi"}},  # the default volume size
    ]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {
        "data": "/var/lib/kvnode",
        "backups": "/backups/store",
        "restore": "/backups/restore",
        "tmp": "/tmp",
    }
    assert env(build_statefulset(OWNER, spec, 3, CONFIG))["KVNODE_BACKUP_ROOT"]["value"] == "/backups"
    same = build_statefulset(OWNER, spec, 3, CONFIG, restore_claim="bk")["spec"]["template"]["spec"]
    assert [v["name"] for v in same["volumes"]] == ["backups", "tmp"]


def test_a_bucket_needs_no_volume_but_its_credentials_and_key() -> None:
    target = {
        "bucket": "bkt",
        "endpoint": "http://minio:9000",
        "region": "eu-west-1",
        "credentialsSecret": {"name": "s3"},
        "hmacKeySecret": {"name": "key"},
    }
    spec = parse_store_spec({"backup": {"objectStore": target}})
    pod = build_statefulset(OWNER, spec, 3, CONFIG)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes.pop("backup-hmac-key") == {
        "name": "backup-hmac-key",
        "secret": {"secretName": "key", "items": [{"key": "hmac-key", "path": "hmac-key"}]},
    }
    assert "backups" not in volumes  # no backup volume, only the TLS files and /tmp besides the key
    assert {v.get("secret", {}).get("secretName") for v in volumes.values()} <= {"demo-node-tls", None}
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KVNODE_BACKUP_HMAC_KEY_FILE"] == "/etc/kvstore/backup-hmac/hmac-key"
    assert (env["AWS_ENDPOINT_URL"], env["AWS_REGION"]) == ("http://minio:9000", "eu-west-1")
    assert container["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert "serviceAccountName" not in pod
    identity = parse_store_spec(
        {
            "backup": {
                "objectStore": {
                    "bucket": "bkt",
                    "serviceAccountName": "kv-irsa",
                    "hmacKeySecret": {"name": "k"},
                }
            }
        }
    )
    pod = build_statefulset(OWNER, identity, 3, CONFIG)["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tls", "backup-hmac-key", "tmp"]
    assert pod["serviceAccountName"] == "kv-irsa" and "envFrom" not in pod["containers"][0]
    names_ = {e["name"] for e in pod["containers"][0]["env"]}
    assert "AWS_ENDPOINT_URL" not in names_ and "AWS_REGION" not in names_  # AWS S3, the SDK's region


def test_an_encryption_key_is_mounted_beside_the_signing_key() -> None:
    target = {"bucket": "bkt", "hmacKeySecret": {"name": "k"}, "encryptionKeySecret": {"name": "enc"}}
    pod = build_statefulset(OWNER, parse_store_spec({"backup": {"objectStore": target}}), 3, CONFIG)
    spec = pod["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["backup-encryption-key"] == {
        "name": "backup-encryption-key",
        "secret": {"secretName": "enc", "items": [{"key": "encryption-key", "path": "encryption-key"}]},
    }
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["KVNODE_BACKUP_ENCRYPTION_KEY_FILE"] == "/etc/kvstore/backup-encryption/encryption-key"


def test_claim_retention_and_pod_ip_mode() -> None:
    spec = parse_store_spec(
        {"storage": {"deleteClaimsOnScaleDown": True}, "podAntiAffinity": {"mode": "None"}}
    )
    config = OperatorConfig(address_mode=AddressMode.POD_IP)
    sts = build_statefulset(OWNER, spec, 3, config)
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Delete",
    }
    assert env(sts)["KVNODE_ADVERTISE"]["value"] == "$(POD_IP):7000"
    assert "affinity" not in sts["spec"]["template"]["spec"]


def test_services_configmap_pdb() -> None:
    spec = parse_store_spec({"port": 7100})
    headless = build_headless_service(OWNER, spec)
    assert headless["metadata"]["name"] == "demo-headless"
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    client = build_client_service(OWNER, spec)
    assert client["metadata"]["name"] == "demo" and client["spec"]["ports"][0]["port"] == 7100
    cm = build_configmap(OWNER, spec, 3, CONFIG)
    assert cm["data"]["peers"] == ",".join(
        f"demo-{i}=demo-{i}.demo-headless.shop.svc:7100/7001" for i in range(3)
    )
    grown = build_configmap(OWNER, spec, 4, CONFIG)
    assert hash_of(grown) != hash_of(cm)
    pdb = build_pdb(OWNER, spec)
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": client["spec"]["selector"]}}


def test_scheduled_backup_object() -> None:
    when = datetime.datetime(2025, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)
    body = build_scheduled_backup(OWNER, when)
    assert body["metadata"]["name"] == "demo-20250304-050607"
    assert body["metadata"]["labels"][c.LABEL_SCHEDULED] == "true"
    assert body["spec"] == {"storeName": "demo"}


def test_names_and_addresses() -> None:
    assert ordinal_of("demo", "demo-12") == 12
    assert ordinal_of("demo", "demo-x") is None and ordinal_of("demo", "demo-01") is None
    assert ordinal_of("demo", "demo-db-1") is None
    assert member_address("demo", 2, "shop", 7000, "10.1.2.3", CONFIG) == "demo-2.demo-headless.shop.svc:7000"
    pod_ip = OperatorConfig(address_mode=AddressMode.POD_IP)
    assert member_address("demo", 2, "shop", 7000, "10.1.2.3", pod_ip) == "10.1.2.3:7000"
    assert member_address("demo", 2, "shop", 7000, "fd00::1", pod_ip) == "[fd00::1]:7000"
    assert member_address("demo", 2, "shop", 7000, None, pod_ip) is None
    domain = OperatorConfig(cluster_domain="cluster.local")
    assert (
        member_address("demo", 0, "shop", 1, None, domain) == "demo-0.demo-headless.shop.svc.cluster.local:1"
    )


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("s" * 52, None),
        ("s" * 53, "at most 52"),
        ("1demo", "DNS-1035"),  # a Service name starts with a letter
        ("my.store", "DNS-1035"),  # a valid KVStore (DNS subdomain) name, but no Service name
        ("demo", None),
    ],
)
def test_store_names_whose_children_cannot_exist_are_refused(name: str, problem: str | None) -> None:
    found = names.name_problem(name)
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_the_operator_pod_matches_no_store_selector() -> None:
    """The operator's pod carries app.kubernetes.io/name=kvstore and, with the README's release
    name, the store's instance: only the component label tells it from a node."""
    operator_pod = {c.LABEL_NAME: "kvstore", c.LABEL_INSTANCE: "demo", c.LABEL_COMPONENT: "operator"}
    spec = parse_store_spec({})
    selectors = [
        build_client_service(OWNER, spec)["spec"]["selector"],
        build_headless_service(OWNER, spec)["spec"]["selector"],
        build_pdb(OWNER, spec)["spec"]["selector"]["matchLabels"],
        build_statefulset(OWNER, spec, 3, CONFIG)["spec"]["selector"]["matchLabels"],
    ]
    node_pod = build_statefulset(OWNER, spec, 3, CONFIG)["spec"]["template"]["metadata"]["labels"]
    for selector in selectors:
        assert not selector.items() <= operator_pod.items()
        assert selector.items() <= node_pod.items()
    # The selector of StatefulSets made before (immutable, kept) still matches the node pods.
    assert names.legacy_selector_labels("demo").items() <= node_pod.items()


def test_no_child_blocks_its_owners_deletion() -> None:
    """blockOwnerDeletion needs update on kvstores/finalizers under OwnerReferencesPermissionEnforcement."""
    spec = parse_store_spec({})
    when = datetime.datetime(2025, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)
    for body in (
        build_statefulset(OWNER, spec, 3, CONFIG),
        build_client_service(OWNER, spec),
        build_headless_service(OWNER, spec),
        build_configmap(OWNER, spec, 3, CONFIG),
        build_pdb(OWNER, spec),
        build_scheduled_backup(OWNER, when),
    ):
        assert all("blockOwnerDeletion" not in ref for ref in body["metadata"]["ownerReferences"])

"""Backups to a bucket with the operator and real nodes: the node pods mount no backup volume;
their credentials come from a Secret as AWS_* variables and the HMAC key from a Secret volume. A
schedule and a KVBackup produce verified backups in the bucket (moto's S3 server on loopback),
retention deletes the pruned backups' objects, and a new store of another size is restored from
the bucket by URL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvoperator import kube

from kvnode.testing.processes import free_port
from kvnode.testing.s3server import S3Server
from tests.operator.conftest import NAMESPACE, OperatorThread
from tests.operator.helpers import (
    metric,
    missing_keys,
    put_keys,
    wait_event,
)
from tests.operator.kubectl import Kubectl
from tests.operator.manifests import kvbackup, secret
from tests.operator.sim import SECRETS, ClusterSim
from tests.operator.test_backup_restore import pruned_then_suspended, restored, start_scheduled, wait_backup

KEYS = [b"bucket-%03d" % i for i in range(200)]
BUCKET = "operator-backups"


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    with S3Server(tmp_path / "moto.log") as server:
        server.bucket(BUCKET)
        yield server


def bucket_objects(s3: S3Server, prefix: str) -> list[str]:
    listed = s3.s3().list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def test_scheduled_and_on_demand_backups_to_a_bucket_and_a_restore_from_it(
    s3: S3Server, kubectl: Kubectl, sim: ClusterSim, operator: OperatorThread
) -> None:
    """``s3`` first: it stops after the operator and the nodes."""
    credentials = {key: s3.env[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    kubectl.create(SECRETS, NAMESPACE, secret("s3-credentials", NAMESPACE, credentials))
    kubectl.create(SECRETS, NAMESPACE, secret("backup-key", NAMESPACE, {"hmac-key": secrets.token_hex(32)}))
    target = {
        "bucket": BUCKET,
        "endpoint": s3.endpoint,
        "region": s3.env["AWS_REGION"],
        "credentialsSecret": {"name": "s3-credentials"},
        "hmacKeySecret": {"name": "backup-key"},
    }
    port = free_port()
    start_scheduled(kubectl, port, object_store=target)
    sts = kubectl.get(kube.STATEFULSETS, NAMESPACE, "src")
    assert sts is not None
    pod = sts["spec"]["template"]["spec"]
    assert {v["name"] for v in pod["volumes"]} == {"backup-hmac-key", "tmp"}  # no backup volume
    acked = put_keys(sim.address("src", 0, port), KEYS)

    kubectl.create(kube.KVBACKUPS, NAMESPACE, kvbackup("manual", NAMESPACE, "src"))
    status = wait_backup(kubectl, "manual")
    assert status["phase"] == "Succeeded" and status["verified"] is True, status
    assert status["directory"] == f"s3://{BUCKET}/src" and status["keys"] == len(KEYS)
    assert bucket_objects(s3, "src/manual/") == [
        f"src/manual/src-{i}/{name}" for i in range(3) for name in ("manifest.json", "snapshot.zst")
    ]
    wait_event(kubectl, "BackupSucceeded", kind="KVBackup", name="manual")

    pruned = pruned_then_suspended(kubectl)
    in_bucket = {key.split("/")[1] for key in bucket_objects(s3, "src/")}
    assert pruned and not set(pruned) & in_bucket  # the pruned backups' objects are gone
    assert "manual" in in_bucket
    listen = operator.config.metrics_listen
    assert metric(listen, "kvstore_operator_backup_bytes_total", store="src", target="bucket") > 0

    dst_port, restore = restored(
        kubectl,
        2,
        replication_factor=2,
        object_store=target,
        restore_from={"backupId": "manual", "url": f"s3://{BUCKET}/src"},
    )
    assert restore["keys"] == len(KEYS)
    assert missing_keys(sim.address("dst", 1, dst_port), acked) == []

"""Backups to a bucket on a real cluster (kind): MinIO runs in the cluster, the store's pods mount
no backup volume, a KVBackup to the bucket ends Succeeded and verified, and a new store of another
size is restored from the bucket by URL.

Skipped, with a message, wherever the kind suite is (tests/kind/conftest.py), and where MinIO's
image cannot be pulled (a cluster without network access to a registry).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from e2e.kind import k8s
from kvnode.testing.processes import free_port
from tests.kind.test_kind_operator import forwarded
from tests.operator.helpers import missing_keys, put_keys
from tests.operator.manifests import kvbackup, kvstore, secret

pytestmark = [pytest.mark.kind, pytest.mark.timeout(3600)]

MINIO_IMAGE = "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z"
ACCESS_KEY, SECRET_KEY = "kvstore", secrets.token_hex(16)
BUCKET = "kvstore-backups"
KEYS = [b"kind-bucket-%04d" % i for i in range(300)]


def minio(namespace: str) -> list[k8s.Body]:
    labels = {"app": "minio"}
    env = [
        {"name": "MINIO_ROOT_USER", "value": ACCESS_KEY},
        {"name": "MINIO_ROOT_PASSWORD", "value": SECRET_KEY},
    ]
    container = {
        "name": "minio",
        "image": MINIO_IMAGE,
        "args": ["server", "/data"],
        "env": env,
        "ports": [{"containerPort": 9000}],
        "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": 9000}},
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "minio", "namespace": namespace},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "minio", "namespace": namespace},
            "spec": {"selector": labels, "ports": [{"port": 9000}]},
        },
    ]


@pytest.fixture(scope="module")
def kubectl(cluster: str) -> Iterator[k8s.Kubectl]:
    """A namespace with MinIO Ready, its bucket made, and the store's Secrets."""
    namespace = f"kv-bucket-{secrets.token_hex(3)}"
    k8s.run(["kubectl", "--context", cluster, "create", "namespace", namespace])
    client = k8s.Kubectl(cluster, namespace)
    try:
        for body in minio(namespace):
            client.apply(body)
        ready = client.result("rollout", "status", "deployment/minio", "--timeout=300s", timeout=360)
        if ready.returncode != 0:
            pytest.skip(
                f"kind bucket test skipped: MinIO ({MINIO_IMAGE}) did not start: {ready.stderr.strip()}"
            )
        pod = client("get", "pods", "-l", "app=minio", "-o", "jsonpath={.items[0].metadata.name}").strip()
        forward = k8s.PortForward(client, pod, free_port(), remote=9000).start()
        try:
            import boto3  # a dev dependency (moto's)

            s3 = boto3.client(
                "s3",
                endpoint_url=f"http://{forward.endpoint}",
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                region_name="us-east-1",
            )
            k8s.wait_until(lambda: s3.create_bucket(Bucket=BUCKET), 60, "the bucket to be made")
        finally:
            forward.stop()
        credentials = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        client.apply(secret("s3-credentials", namespace, credentials))
        client.apply(secret("backup-key", namespace, {"hmac-key": secrets.token_hex(32)}))
        yield client
    finally:
        for name in ("restored", "src"):
            client("delete", "kvstore", name, "--ignore-not-found", "--wait=true", "--timeout=120s",
                   check=False, timeout=180)  # fmt: skip
        k8s.run(
            ["kubectl", "--context", cluster, "delete", "namespace", namespace, "--wait=false"], check=False
        )


def test_a_backup_to_minio_restores_into_a_store_of_another_size(kubectl: k8s.Kubectl) -> None:
    target = {
        "bucket": BUCKET,
        "endpoint": f"http://minio.{kubectl.namespace}:9000",
        "region": "us-east-1",
        "credentialsSecret": {"name": "s3-credentials"},
        "hmacKeySecret": {"name": "backup-key"},
    }
    kubectl.apply(kvstore("src", kubectl.namespace, object_store=target))
    source = k8s.Store(kubectl, "src")
    k8s.wait_until(lambda: source.healthy(3), 600, "the KVStore to be Available with 3 Ready members")
    pod = kubectl.json("statefulset", "src")["spec"]["template"]["spec"]
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])  # no backup volume
    with forwarded(kubectl, source.pod(0)) as endpoint:
        assert put_keys(endpoint, KEYS) == KEYS
    kubectl.apply(kvbackup("to-minio", kubectl.namespace, "src"))

    def finished() -> bool:
        return kubectl.json("kvbackup", "to-minio").get("status", {}).get("phase") in ("Succeeded", "Failed")

    k8s.wait_until(finished, 600, "KVBackup to-minio to finish")
    status = kubectl.json("kvbackup", "to-minio")["status"]
    assert status["phase"] == "Succeeded" and status["verified"] is True, status

    url = f"s3://{BUCKET}/src"
    restored = kvstore("restored", kubectl.namespace, replicas=4, object_store=target,
                       restore_from={"backupId": "to-minio", "url": url})  # fmt: skip
    kubectl.apply(restored)
    store = k8s.Store(kubectl, "restored")

    def done() -> bool:
        return (
            store.healthy(4) and store.body().get("status", {}).get("restore", {}).get("phase") == "Succeeded"
        )

    k8s.wait_until(done, 900, "the new store to restore from MinIO")
    with forwarded(kubectl, store.pod(3)) as endpoint:
        assert missing_keys(endpoint, KEYS) == []

"""Backups to an S3 bucket, on real node processes against a real S3 API (moto's server) over
HTTP on loopback: a 3-node backup restored into a cluster of another size, tampering caught and
named, a node killed in the middle of an upload, deletion, and the errors of a wrong setup."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from kvnode.backup.encryption import MAGIC
from kvnode.client import KVClient
from kvnode.core.errors import FailedPrecondition, InvalidArgument, KVError, NotFound
from kvnode.testing.processes import ProcessCluster, wait_for
from kvnode.testing.s3server import S3Server
from tests.cli.test_kvctl import kvctl
from tests.cli.test_kvctl_admin import fill
from tests.conftest import ClusterFactory


def bucket_cluster(
    cluster_factory: ClusterFactory, s3: S3Server, key: Path, size: int = 1, **kwargs: Any
) -> ProcessCluster:
    """Nodes that reach the S3 server with the standard AWS variables and hold the store's key."""
    env = {**s3.env, **kwargs.pop("env", {})}
    extra_args = ["--backup-hmac-key-file", str(key), *kwargs.pop("extra_args", [])]
    return cluster_factory(size=size, extra_args=extra_args, env=env, **kwargs)


def objects(s3: S3Server, bucket: str, prefix: str = "") -> dict[str, int]:
    listed = s3.s3().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: o["Size"] for o in listed}


def test_backup_of_three_nodes_restores_into_a_cluster_of_another_size(
    cluster_factory: ClusterFactory, s3: S3Server, hmac_key_file: Path
) -> None:
    url = s3.bucket("three-nodes") + "/nightly"
    source = bucket_cluster(cluster_factory, s3, hmac_key_file, size=3)
    live = fill(source.endpoints, 300)
    made = kvctl("backup", "--dir", url, "b1", "-o", "json", "--progress", endpoints=source.endpoints)
    assert made.returncode == 0, made.stderr.decode()
    assert re.search(rb"kvctl: kv-2: 270 keys, [0-9.]+ MB in [0-9.]+ s \([0-9.]+ MB/s\)", made.stderr)
    report = json.loads(made.stdout)
    assert report["ok"] and sorted(n["node_id"] for n in report["nodes"]) == ["kv-0", "kv-1", "kv-2"]
    assert {n["keys"] for n in report["nodes"]} == {270}  # every node holds every key at RF 3
    stored = objects(s3, "three-nodes")
    assert sorted(stored) == [
        f"nightly/b1/kv-{i}/{name}" for i in range(3) for name in ("manifest.json", "snapshot.zst")
    ]
    document = s3.s3().get_object(Bucket="three-nodes", Key="nightly/b1/kv-0/manifest.json")["Body"]
    manifest = json.loads(document.read())
    assert manifest["objects"] == [
        {"name": "snapshot.zst", "size": stored["nightly/b1/kv-0/snapshot.zst"], "sha256": manifest["sha256"]}
    ]
    assert len(manifest["signature"]) == 64
    listed = kvctl("backup", "list", "--dir", url, endpoints=source.endpoints)
    assert listed.stdout.startswith(b"b1\t3 nodes\t270 keys"), listed.stdout

    target = bucket_cluster(cluster_factory, s3, hmac_key_file, size=2, replication_factor=2)
    restored = kvctl("restore", "b1", "--dir", url, endpoints=target.endpoints)
    assert restored.returncode == 0, restored.stderr.decode()
    assert b"restored 270 keys" in restored.stdout
    with KVClient(target.endpoints) as client:
        after = {e.key: e.version for e in client.scan(prefix=b"bk")}
    assert after == live  # same keys, each with its original version


def test_verification_refuses_a_changed_object_and_then_a_changed_manifest(
    cluster_factory: ClusterFactory, s3: S3Server, hmac_key_file: Path
) -> None:
    url = s3.bucket("tamper")
    cluster = bucket_cluster(cluster_factory, s3, hmac_key_file)
    fill(cluster.endpoints, 50)
    admin = cluster.admin
    admin.backup(cluster[0].address, url, "b1")
    assert admin.verify_backup(url, "b1").ok
    client = s3.s3()
    snapshot_key, manifest_key = "b1/kv-0/snapshot.zst", "b1/kv-0/manifest.json"
    original = client.get_object(Bucket="tamper", Key=snapshot_key)["Body"].read()
    flipped = original[:100] + bytes([original[100] ^ 1]) + original[101:]
    client.put_object(Bucket="tamper", Key=snapshot_key, Body=flipped)
    verdict = admin.verify_backup(url, "b1")
    assert not verdict.ok
    assert [p.split(" with SHA-256")[0] for p in verdict.problems] == [
        f"kv-0: snapshot.zst was changed: {len(original)} bytes"
    ]
    with pytest.raises(FailedPrecondition, match=r"snapshot\.zst was changed"):
        admin.restore(url, "b1")

    client.put_object(Bucket="tamper", Key=snapshot_key, Body=original)
    assert admin.verify_backup(url, "b1").ok
    manifest = json.loads(client.get_object(Bucket="tamper", Key=manifest_key)["Body"].read())
    manifest["keys"] += 1  # e.g. to hide a deletion; the signature no longer matches
    client.put_object(Bucket="tamper", Key=manifest_key, Body=json.dumps(manifest).encode())
    verdict = admin.verify_backup(url, "b1")
    assert list(verdict.problems) == [
        "kv-0: manifest.json refused: manifest signature does not match: "
        "it was changed, or signed with another key"
    ]
    with pytest.raises(FailedPrecondition, match="manifest signature does not match"):
        admin.restore(url, "b1")
    assert list(admin.list_backups(url).backups[0].incomplete_node_ids) == ["kv-0"]


def test_a_node_killed_mid_upload_leaves_a_backup_reported_incomplete_and_deletable(
    cluster_factory: ClusterFactory, s3: S3Server, hmac_key_file: Path, tmp_path: Path
) -> None:
    """Random values do not compress, so the snapshot takes several upload blocks; the failpoint
    pauses after each, and the node is killed during the pause."""
    url = s3.bucket("killed")
    cluster = bucket_cluster(
        cluster_factory, s3, hmac_key_file, env={"KVNODE_FAILPOINTS": "backup-upload-delay=60s"}
    )
    with KVClient(cluster.endpoints) as client:
        for batch in range(12):
            client.batch_write(puts={b"big%02d-%03d" % (batch, i): os.urandom(1024) for i in range(1000)})
    outcome: list[BaseException] = []

    def backup() -> None:
        try:
            cluster.admin.backup(cluster[0].address, url, "b1", timeout=120)
        except KVError as exc:
            outcome.append(exc)

    taking = threading.Thread(target=backup)
    taking.start()
    wait_for(lambda: "b1/kv-0/uploading" in objects(s3, "killed"), 30, "the upload to start")
    cluster.kill(0)
    taking.join(timeout=60)
    assert outcome, "the backup call must fail when its node dies"

    cluster.env.pop("KVNODE_FAILPOINTS")
    cluster.start(cluster[0].node_id)
    admin = cluster.admin
    listed = kvctl("backup", "list", "--dir", url, endpoints=cluster.endpoints)
    assert listed.stdout == b"b1\t0 nodes\t0 keys\tINCOMPLETE: kv-0\n"
    (summary,) = admin.list_backups(url).backups
    assert (summary.backup_id, list(summary.node_ids)) == ("b1", [])
    assert list(summary.incomplete_node_ids) == ["kv-0"]
    verdict = admin.verify_backup(url, "b1")
    assert not verdict.ok
    assert list(verdict.problems) == ["kv-0: the upload never finished (no manifest.json); delete the backup"]
    assert admin.delete_backup(url, "b1")
    assert objects(s3, "killed") == {}
    admin.backup(cluster[0].address, url, "b1")  # the same id again, now complete
    assert admin.verify_backup(url, "b1").ok


def test_deleting_a_backup_removes_its_objects_and_no_others(
    cluster_factory: ClusterFactory, s3: S3Server, hmac_key_file: Path
) -> None:
    url = s3.bucket("retention") + "/store"
    cluster = bucket_cluster(cluster_factory, s3, hmac_key_file)
    fill(cluster.endpoints, 20)
    admin = cluster.admin
    for backup_id in ("b1", "b10", "b2"):  # b1 is a prefix of b10: deleting b1 must spare it
        admin.backup(cluster[0].address, url, backup_id)
    s3.s3().put_object(Bucket="retention", Key="unrelated/file", Body=b"x")
    assert [b.backup_id for b in admin.list_backups(url).backups] == ["b1", "b10", "b2"]
    assert admin.delete_backup(url, "b1")
    assert not admin.delete_backup(url, "b1")
    assert sorted({k.split("/")[1] for k in objects(s3, "retention", "store/")}) == ["b10", "b2"]
    assert "unrelated/file" in objects(s3, "retention")
    assert [b.backup_id for b in admin.list_backups(url).backups] == ["b10", "b2"]
    assert admin.verify_backup(url, "b10").ok
    with pytest.raises(NotFound, match="no backup 'b1'"):
        admin.verify_backup(url, "b1")


def test_a_wrong_setup_gets_a_precise_error(
    cluster_factory: ClusterFactory, s3: S3Server, hmac_key_file: Path
) -> None:
    url = s3.bucket("setup")
    good = bucket_cluster(cluster_factory, s3, hmac_key_file)
    with pytest.raises(FailedPrecondition, match="bucket 'no-such-bucket' does not exist"):
        good.admin.backup(good[0].address, "s3://no-such-bucket/x", "b1")
    with pytest.raises(InvalidArgument, match="invalid object-store URL"):
        good.admin.backup(good[0].address, "s3:///prefix-only", "b1")
    with pytest.raises(InvalidArgument, match="invalid backup id"):
        good.admin.backup(good[0].address, url, "../up")

    wrong = bucket_cluster(cluster_factory, s3, hmac_key_file, env={"AWS_SECRET_ACCESS_KEY": "wrong"})
    with pytest.raises(FailedPrecondition, match=r"refused this node's credentials.*SignatureDoesNotMatch"):
        wrong.admin.backup(wrong[0].address, url, "b1")
    with pytest.raises(FailedPrecondition, match="refused this node's credentials"):
        wrong.admin.list_backups(url)

    keyless = cluster_factory(size=1, env=s3.env)
    with pytest.raises(FailedPrecondition, match="--backup-hmac-key-file"):
        keyless.admin.backup(keyless[0].address, url, "b1")
    assert objects(s3, "setup") == {}


def test_an_encrypted_backup_restores_only_where_the_key_is(
    cluster_factory: ClusterFactory, s3: S3Server, hmac_key_file: Path, tmp_path: Path
) -> None:
    url = s3.bucket("encrypted")
    key_file = tmp_path / "backup-encryption.key"
    key_file.write_text(os.urandom(32).hex())
    encrypting = ["--backup-encryption-key-file", str(key_file)]
    keyed = bucket_cluster(cluster_factory, s3, hmac_key_file, extra_args=encrypting)
    live = fill(keyed.endpoints, 100)
    keyed.admin.backup(keyed[0].address, url, "b1")
    stored = s3.s3().get_object(Bucket="encrypted", Key="b1/kv-0/snapshot.zst")["Body"].read()
    assert stored.startswith(MAGIC) and b"value-1" not in stored
    assert keyed.admin.verify_backup(url, "b1").ok

    keyless = bucket_cluster(cluster_factory, s3, hmac_key_file)
    verdict = keyless.admin.verify_backup(url, "b1")
    assert list(verdict.problems) == [
        "kv-0: snapshot.zst: the snapshot is encrypted and this node has no --backup-encryption-key-file"
    ]
    with pytest.raises(FailedPrecondition, match="no --backup-encryption-key-file"):
        keyless.admin.restore(url, "b1")

    target = bucket_cluster(cluster_factory, s3, hmac_key_file, extra_args=encrypting)
    assert target.admin.restore(url, "b1").keys == len(live)
    with KVClient(target.endpoints) as client:
        assert {e.key: e.version for e in client.scan(prefix=b"bk")} == live

"""kvctl's cluster administration without Kubernetes: backups, restores, membership changes."""

from __future__ import annotations

import json
from pathlib import Path

from kvnode.backup.snapshots import snapshot_records
from kvnode.client import KVClient
from kvnode.core.records import Record, Version
from kvnode.testing.processes import ProcessCluster

from .test_kvctl import kvctl


def fill(endpoints: list[str], count: int) -> dict[bytes, object]:
    """Write keys (and delete a few); returns key -> version of every live key."""
    with KVClient(endpoints) as client:
        client.batch_write(puts={b"bk%04d" % i: b"value-%d" % i for i in range(count)})
        client.batch_write(deletes=[b"bk%04d" % i for i in range(0, count, 10)])
        return {e.key: e.version for e in client.scan(prefix=b"bk")}


def newest_live(backup: Path) -> dict[bytes, Version]:
    """Key -> version of every key whose newest version among all of a backup's snapshots lives."""
    newest: dict[bytes, Record] = {}
    for snapshot in sorted(backup.iterdir()):
        for rec in snapshot_records(snapshot):
            if rec.key not in newest or rec.version > newest[rec.key].version:
                newest[rec.key] = rec
    return {key: rec.version for key, rec in newest.items() if not rec.tombstone}


def test_backup_verify_list_restore_into_a_cluster_of_another_size(
    tmp_path: Path, cluster_factory: object
) -> None:
    """A write is acknowledged once two replicas of three hold it, so one node's snapshot may lack
    it: here the third node is down while the keys are written, and keeps no hints nor runs
    anti-entropy, so it lacks every one of them. Together the snapshots hold every acknowledged
    write, which is what a restore replays."""
    source: ProcessCluster = cluster_factory(  # type: ignore[operator]
        size=3, extra_args=["--hint-max-bytes", "0", "--anti-entropy-interval", "1h"]
    )
    behind = source[2].node_id
    source.kill(behind)
    live = fill(source.endpoints[:2], 300)
    assert len(live) == 270
    source.start(behind)
    backups = tmp_path / "backups"
    made = kvctl("backup", "--dir", str(backups), "nightly-1", "-o", "json", endpoints=source.endpoints)
    assert made.returncode == 0, made.stderr.decode()
    report = json.loads(made.stdout)
    assert report["ok"] and len(report["nodes"]) == 3
    assert {n["node_id"]: n["keys"] for n in report["nodes"]} == {
        source[0].node_id: 270,
        source[1].node_id: 270,
        behind: 0,
    }
    assert newest_live(backups / "nightly-1") == live
    assert (
        kvctl("backup", "verify", "nightly-1", "--dir", str(backups), endpoints=source.endpoints).returncode
        == 0
    )
    listed = kvctl("backup", "list", "--dir", str(backups), endpoints=source.endpoints)
    assert listed.stdout.startswith(b"nightly-1\t3 nodes\t270 keys")  # the largest snapshot's

    target: ProcessCluster = cluster_factory(size=2, replication_factor=2)  # type: ignore[operator]
    restored = kvctl("restore", "nightly-1", "--dir", str(backups), endpoints=target.endpoints)
    assert restored.returncode == 0, restored.stderr.decode()
    assert b"restored 270 keys" in restored.stdout
    with KVClient(target.endpoints) as client:
        after = {e.key: e.version for e in client.scan(prefix=b"bk")}
    assert after == live  # same keys, and each with its original version


def test_a_corrupt_backup_fails_verification_and_is_not_restored(
    tmp_path: Path, cluster_factory: object
) -> None:
    cluster: ProcessCluster = cluster_factory(size=1)  # type: ignore[operator]
    fill(cluster.endpoints, 20)
    backups = tmp_path / "backups"
    assert kvctl("backup", "--dir", str(backups), "b1", endpoints=cluster.endpoints).returncode == 0
    snapshot = next(backups.glob("b1/*/data.mdb"))
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    verify = kvctl("backup", "verify", "b1", "--dir", str(backups), endpoints=cluster.endpoints)
    assert verify.returncode == 3
    assert b"checksum mismatch" in verify.stderr
    restore = kvctl("restore", "b1", "--dir", str(backups), endpoints=cluster.endpoints)
    assert restore.returncode == 2  # refused, as the exit-code table says of refusals
    assert b"refused: backup b1 failed verification" in restore.stderr
    missing = kvctl("restore", "nope", "--dir", str(backups), endpoints=cluster.endpoints)
    assert missing.returncode == 3 and b"no backup 'nope'" in missing.stderr
    deleted = kvctl("backup", "delete", "b1", "--dir", str(backups), endpoints=cluster.endpoints)
    assert deleted.stdout == b"deleted\n" and not (backups / "b1").exists()


def test_member_add_and_remove(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path, size=4, partitions=64) as cluster:
        original = ",".join(f"{n.node_id}={n.address}" for n in cluster.nodes[:3])
        cluster.start([0, 1, 2], peers=original)
        endpoints = cluster.endpoints[:3]
        fill(endpoints, 100)
        assert kvctl("member", "list", endpoints=endpoints).stdout.startswith(b"epoch 0: kv-0, kv-1, kv-2")
        cluster.start(3, peers=original + f",kv-3={cluster[3].address}")
        added = kvctl("member", "add", f"kv-3={cluster[3].address}", "-o", "json", endpoints=endpoints)
        assert added.returncode == 0, added.stderr.decode()
        assert [m["id"] for m in json.loads(added.stdout)["members"]] == ["kv-0", "kv-1", "kv-2", "kv-3"]
        assert b"join done" in added.stderr
        refused = kvctl("member", "add", "kv-9", endpoints=endpoints)
        assert refused.returncode == 2 and b"needs ID=HOST:PORT" in refused.stderr
        removed = kvctl("member", "remove", "kv-0", endpoints=endpoints[1:])
        assert removed.returncode == 0, removed.stderr.decode()
        assert b"decommission done" in removed.stderr
        cluster.kill(0)
        with KVClient(cluster.endpoints[1:]) as client:
            assert len(list(client.scan(prefix=b"bk", consistency="ALL"))) == 90

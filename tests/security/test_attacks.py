"""The attacks that opened issue #12, each now refused. Before, an anonymous client on loopback
could delete any folder, hand the data to a fake peer, lock the operator out with a huge epoch, and
write replicas directly. Here the node serves TLS, takes bearer tokens and confines backups under
--backup-root; "anonymous" is a client that trusts the node but has no token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from kvnode.api.v1 import replica_pb2, replica_pb2_grpc
from kvnode.client import (
    Admin,
    Credentials,
    FailedPrecondition,
    KVClient,
    PermissionDenied,
    Unauthenticated,
)
from kvnode.core.membership import Member, MemberState
from kvnode.testing.processes import ProcessCluster
from kvnode.testing.tls import TestPKI

TOKENS = 'adm1n,operator,1,"kvstore:admin"\nwr1te,app,2,"kvstore:write"\n'


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProcessCluster, TestPKI, Path]]:
    root = tmp_path_factory.mktemp("attacks")
    pki = TestPKI(root / "pki")
    cert, key = pki.node_files("kv-0")
    (root / "tokens.csv").write_text(TOKENS)
    backups = root / "backups"
    backups.mkdir()
    args = ["--cert-file", str(cert), "--key-file", str(key), "--token-file", str(root / "tokens.csv")]
    args += ["--backup-root", str(backups)]
    with ProcessCluster(root / "nodes", 1, replication_factor=1, partitions=16, extra_args=args) as cluster:
        cluster.credentials = Credentials(ca=pki.ca.cert, token="adm1n")
        cluster.start()
        yield cluster, pki, backups


def as_(pki: TestPKI, token: str | None) -> Credentials:
    return Credentials(ca=pki.ca.cert, token=token)


def test_delete_backup_cannot_remove_an_unrelated_folder_or_the_nodes_data(
    guarded: tuple[ProcessCluster, TestPKI, Path], tmp_path: Path
) -> None:
    cluster, pki, backups = guarded
    data = cluster[0].data_dir
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    with (
        Admin.connect(cluster.endpoints, credentials=as_(pki, None)) as anonymous,
        pytest.raises(Unauthenticated),
    ):
        anonymous.delete_backup(str(tmp_path), "victim")
    with (
        Admin.connect(cluster.endpoints, credentials=as_(pki, "wr1te")) as writer,
        pytest.raises(PermissionDenied, match="needs the role kvstore:admin"),
    ):
        writer.delete_backup(str(data.parent), data.name)
    with Admin.connect(cluster.endpoints, credentials=as_(pki, "adm1n")) as admin:
        # Even an admin cannot reach outside --backup-root, by absolute path or by "..".
        with pytest.raises(PermissionDenied, match="outside --backup-root"):
            admin.delete_backup(str(tmp_path), "victim")
        with pytest.raises(PermissionDenied, match="outside --backup-root"):
            admin.delete_backup(f"../{data.parent.relative_to(backups.parent)}", data.name)
        # And inside it, only a folder of snapshots with manifests is deleted.
        (backups / "not-a-backup").mkdir()
        (backups / "not-a-backup" / "notes").write_text("mine")
        with pytest.raises(FailedPrecondition, match="not a backup"):
            admin.delete_backup(".", "not-a-backup")
        assert (backups / "not-a-backup" / "notes").exists()
        manifest = admin.backup(cluster.endpoints[0], ".", "real")
        assert Path(manifest.path).is_relative_to(backups)
        assert admin.delete_backup(".", "real")
    assert (victim / "precious").read_text() == "keep me"
    assert data.is_dir() and any(data.iterdir())


def test_an_anonymous_client_cannot_change_the_membership_or_start_a_decommission(
    guarded: tuple[ProcessCluster, TestPKI, Path],
) -> None:
    cluster, pki, _ = guarded
    current = cluster.admin.membership()
    fake = replace(
        current,
        epoch=current.epoch + 1,
        members=(*current.members, Member("thief", "127.0.0.1:1", MemberState.JOINING)),
    )
    locked_out = replace(current, epoch=2**64 - 1)
    address = cluster.endpoints[0]
    for token, refused in ((None, Unauthenticated), ("wr1te", PermissionDenied)):
        with Admin.connect(cluster.endpoints, credentials=as_(pki, token)) as caller:
            for membership in (fake, locked_out):
                with pytest.raises(refused):
                    caller.set_membership(address, membership)
            with pytest.raises(refused):
                caller.decommission(address)
            with pytest.raises(refused):
                caller.restore(".", "anything")
    assert cluster.admin.membership() == current


def test_clients_cannot_write_replicas_directly(guarded: tuple[ProcessCluster, TestPKI, Path]) -> None:
    cluster, pki, _ = guarded
    for token in (None, "wr1te", "adm1n"):
        creds = grpc.ssl_channel_credentials(pki.ca.cert)
        if token is not None:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
        with (
            grpc.secure_channel(cluster.endpoints[0], creds) as channel,
            pytest.raises(grpc.RpcError) as refused,
        ):
            replica_pb2_grpc.ReplicaStub(channel).Apply(replica_pb2.ApplyRequest(), timeout=5)
        expected = grpc.StatusCode.UNAUTHENTICATED if token is None else grpc.StatusCode.PERMISSION_DENIED
        assert refused.value.code() == expected, token
    with KVClient(cluster.endpoints, credentials=as_(pki, "wr1te")) as kv:
        kv.put("still", "works")

"""Clusters whose nodes talk to each other on peer ports with mutual TLS: replication at every
level, hints, a join and a decommission, the peer port's refusal of client certificates, and the
upgrade from single-port memberships. Real node processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from kvnode.api.v1 import replica_pb2, replica_pb2_grpc
from kvnode.cli.kvctl import main as kvctl_main
from kvnode.client import Admin, Credentials, KVClient, PermissionDenied
from kvnode.client.reconfig import Reconfigurer
from kvnode.core.certs import ADMIN_ROLE, PEER_ROLE
from kvnode.core.membership import Membership
from kvnode.testing.processes import ProcessCluster, wait_for
from kvnode.testing.tls import TestPKI


def digests(address: str, credentials: Credentials) -> grpc.StatusCode:
    """The status of a Replica call made with ``credentials``'s certificate."""
    creds = grpc.ssl_channel_credentials(credentials.ca, credentials.key, credentials.cert)
    with grpc.secure_channel(address, creds) as channel:
        try:
            replica_pb2_grpc.ReplicaStub(channel).Digests(replica_pb2.DigestsRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def legacy_peers(cluster: ProcessCluster, count: int) -> str:
    return ",".join(f"{n.node_id}={n.address}" for n in cluster.nodes[:count])


def test_a_cluster_with_client_and_peer_mtls_replicates_hints_joins_and_decommissions(tmp_path: Path) -> None:
    pki = TestPKI(tmp_path / "pki")
    with ProcessCluster(tmp_path, 4, partitions=32, pki=pki, peer_ports=True) as cluster:
        three = ",".join(n.peer_entry for n in cluster.nodes[:3])
        cluster.start([0, 1, 2], peers=three)
        admin = cluster.credentials
        keys = [f"k{i:03d}" for i in range(60)]
        with KVClient(cluster.endpoints[:3], credentials=admin, timeout=10) as kv:
            for key in keys[:30]:
                kv.put(key, key, consistency="QUORUM")
            for key in keys[:30]:
                assert kv.get(key, consistency="LINEARIZABLE").value == key.encode()  # type: ignore[union-attr]

            # Hints: writes while kv-2 is down reach it when it is back.
            cluster.kill(2)
            for key in keys[30:]:
                kv.put(key, key, consistency="QUORUM")
        cluster.start(2, peers=three)
        with KVClient([cluster[2].address], credentials=admin, route=False, consistency="ONE") as alone:
            wait_for(lambda: alone.get(keys[-1]) is not None, 30, "kv-2 to receive its hints")

        # The peer port takes peers only; the client port no longer serves Replica.
        assert digests(f"127.0.0.1:{cluster[0].peer_port}", pki.client("op", [ADMIN_ROLE])) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert (
            digests(f"127.0.0.1:{cluster[0].peer_port}", pki.client("p", [PEER_ROLE])) == grpc.StatusCode.OK
        )
        assert digests(cluster[0].address, pki.client("p", [PEER_ROLE])) == grpc.StatusCode.PERMISSION_DENIED

        # A join, then a decommission, over the peer ports.
        new = cluster[3]
        cluster.start(3, peers=f"{three},{new.peer_entry}")
        membership = asyncio.run(_add(cluster, admin, new.node_id, new.address, f"127.0.0.1:{new.peer_port}"))
        assert [m.peer_address for m in membership.members] == [
            f"127.0.0.1:{n.peer_port}" for n in cluster.nodes
        ]
        asyncio.run(_remove(cluster, admin, "kv-0"))
        with KVClient(cluster.endpoints[1:], credentials=admin, timeout=10) as kv:
            for key in keys:
                assert kv.get(key, consistency="ALL").value == key.encode()  # type: ignore[union-attr]


async def _add(
    cluster: ProcessCluster, admin: Credentials | None, node_id: str, address: str, peer: str
) -> Membership:
    async with Reconfigurer.connect(cluster.endpoints[:3], credentials=admin, timeout=30) as reconfig:
        return await reconfig.add(node_id, address, peer)


async def _remove(cluster: ProcessCluster, admin: Credentials | None, node_id: str) -> Membership:
    async with Reconfigurer.connect(cluster.endpoints[1:], credentials=admin, timeout=30) as reconfig:
        return await reconfig.remove(node_id)


def test_the_upgrade_from_single_port_memberships_moves_replication_without_a_restart(tmp_path: Path) -> None:
    """Step 1: nodes run with --peer-listen while the membership knows only their client
    addresses (as a cluster made before peer ports): they keep replicating over the client ports.
    Step 2: ``kvctl member set-peer`` records each member's peer port, one epoch each; replication
    moves there member by member, and writes at ALL work all along."""
    pki = TestPKI(tmp_path / "pki")
    cert, key = pki.ca.issue("kvctl-admin", [ADMIN_ROLE]).write(tmp_path, "admin")
    with ProcessCluster(tmp_path, 3, partitions=32, pki=pki, peer_ports=True) as cluster:
        cluster.start(peers=legacy_peers(cluster, 3))
        peer = pki.client("p", [PEER_ROLE])
        assert digests(cluster[0].address, peer) == grpc.StatusCode.OK  # still served on the client port
        flags = ["--endpoints", ",".join(cluster.endpoints), "--cacert", str(pki.ca_file)]
        flags += ["--cert", str(cert), "--key", str(key)]
        with KVClient(cluster.endpoints, credentials=cluster.credentials, consistency="ALL") as kv:
            kv.put("before", "0")
            for i, node in enumerate(cluster.nodes):
                assert (
                    kvctl_main([*flags, "member", "set-peer", f"{node.node_id}=127.0.0.1:{node.peer_port}"])
                    == 0
                )
                kv.put(f"after-{i}", "1")
            assert kv.get("before").value == b"0"  # type: ignore[union-attr]
        assert digests(cluster[0].address, peer) == grpc.StatusCode.PERMISSION_DENIED
        members = cluster.admin.membership().members
        assert [m.peer_address for m in members] == [f"127.0.0.1:{n.peer_port}" for n in cluster.nodes]


pytestmark = pytest.mark.timeout(240)


def test_a_plaintext_peer_port_still_serves_no_admin_call_but_get_membership(tmp_path: Path) -> None:
    """Even without peer TLS, the peer port is no back door to the Admin service."""
    with ProcessCluster(tmp_path, 1, replication_factor=1, partitions=16, peer_ports=True) as cluster:
        cluster.start()
        peer_port = f"127.0.0.1:{cluster[0].peer_port}"
        with Admin.connect(timeout=5) as admin:
            assert admin.membership(peer_port).members[0].id == "kv-0"
            with pytest.raises(
                PermissionDenied, match="peer port serves Replica and Admin/GetMembership only"
            ):
                admin.delete_backup(str(tmp_path), "kv-0", address=peer_port)


def test_peers_dialed_by_ip_check_the_name_their_certificates_carry(tmp_path: Path) -> None:
    """On Kubernetes with pod-IP addressing, peers dial each other by IP, which no certificate
    names (pods get their IPs after the certificate is issued): `--peer-server-name` checks every
    peer's certificate for the store's DNS name instead. Without it these peers, whose peer
    certificates name only `kv.internal`, fail every handshake and never replicate."""
    pki = TestPKI(tmp_path / "pki")
    with ProcessCluster(tmp_path, 3, partitions=16, pki=pki, peer_ports=True) as cluster:
        for node in cluster.nodes:
            cert, key = pki.ca.node(node.node_id, ["kv.internal"]).write(pki.root / "peer", node.node_id)
            node.extra_args = ["--peer-cert-file", str(cert), "--peer-key-file", str(key)]
            node.extra_args += ["--peer-server-name", "kv.internal"]
        cluster.start()
        with KVClient(cluster.endpoints, credentials=cluster.credentials, timeout=10) as kv:
            for i in range(20):
                kv.put(f"k{i}", f"v{i}", consistency="ALL")  # every replica, over the peer port
            assert [kv.get(f"k{i}", consistency="ALL").value for i in range(20)] == [  # type: ignore[union-attr]
                f"v{i}".encode() for i in range(20)
            ]

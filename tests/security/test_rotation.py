"""Certificate rotation without a restart: the node's certificate files are replaced in place (as
Kubernetes updates a mounted Secret) while clients write; no request fails, and new connections
get the new certificate."""

from __future__ import annotations

import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from kvnode.client import KVClient, KVError
from kvnode.core.certs import ADMIN_ROLE
from kvnode.testing.processes import ProcessCluster, wait_for
from kvnode.testing.tls import TestPKI, served_certificate


def test_rotating_the_node_certificate_under_load_fails_no_request(tmp_path: Path) -> None:
    pki = TestPKI(tmp_path / "pki")
    client_files = pki.ca.issue("rotation-client", [ADMIN_ROLE]).write(tmp_path, "client")
    with ProcessCluster(tmp_path, 1, replication_factor=1, partitions=16, pki=pki) as cluster:
        cluster.start()
        address = cluster.endpoints[0]
        stop = threading.Event()
        failures: list[KVError] = []
        done = [0]

        def load() -> None:
            with KVClient([address], credentials=cluster.credentials, retries=0, timeout=10) as kv:
                while not stop.is_set():
                    try:
                        kv.put(f"r{done[0] % 100}", "v")
                        done[0] += 1
                    except KVError as exc:
                        failures.append(exc)

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            for _ in range(3):
                wait_for(lambda start=done[0]: done[0] > start + 50, 30, "requests to flow")
                pair = pki.ca.node("kv-0")
                pair.write(pki.root, "kv-0")  # replaces the key, then the certificate, as files
                expected = x509.load_pem_x509_certificate(pair.cert).public_bytes(Encoding.DER)
                wait_for(
                    lambda e=expected: served_certificate(address, pki.ca_file, client_files) == e,
                    30,
                    "new connections to get the new certificate",
                )
                # A client connecting after the rotation works at once.
                with KVClient([address], credentials=cluster.credentials, retries=0) as fresh:
                    fresh.put("fresh", "1")
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        assert not failures, failures[:3]
        assert done[0] > 150


def test_rotating_every_node_certificate_of_a_cluster_under_load_fails_no_request(tmp_path: Path) -> None:
    """Peers dial each other with their node certificate: after a rotation each node opens new
    links with the new one, while calls on the old links finish."""
    pki = TestPKI(tmp_path / "pki")
    with ProcessCluster(tmp_path, 3, partitions=16, pki=pki, peer_ports=True) as cluster:
        cluster.start()
        stop = threading.Event()
        failures: list[KVError] = []
        done = [0]

        def load() -> None:
            with KVClient(cluster.endpoints, credentials=cluster.credentials, timeout=10) as kv:
                while not stop.is_set():
                    try:
                        kv.put(f"c{done[0] % 100}", "v", consistency="QUORUM")
                        done[0] += 1
                    except KVError as exc:
                        failures.append(exc)

        workers = [threading.Thread(target=load) for _ in range(3)]
        for worker in workers:
            worker.start()
        try:
            wait_for(lambda: done[0] > 50, 30, "requests to flow")
            for node in cluster.nodes:
                pki.ca.node(node.node_id).write(pki.root, node.node_id)
            for node in cluster.nodes:
                wait_for(lambda n=node: "opening new links to the peers" in n.log_tail(400), 40, "new links")
            start = done[0]
            wait_for(lambda: done[0] > start + 50, 30, "requests to flow on the new links")
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        assert not failures, failures[:3]

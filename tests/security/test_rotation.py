"""Certificate rotation without a restart: the node's certificate files are replaced in place (as
Kubernetes updates a mounted Secret) while clients write; no request fails, and new connections
get the new certificate."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from kvnode.client import KVClient, KVError
from kvnode.core.certs import ADMIN_ROLE
from kvnode.testing.processes import ProcessCluster, wait_for
from kvnode.testing.tls import TestPKI, served_certificate


@dataclass
class Writes:
    """Puts kept going by a few threads: how many were acknowledged, and what failed."""

    done: int = 0
    failures: list[KVError] = field(default_factory=list)

    def flowing(self, more: int = 50) -> None:
        start = self.done
        wait_for(lambda: self.done > start + more, 30, "requests to flow")


@contextlib.contextmanager
def steady_writes(cluster: ProcessCluster, threads: int, **options: Any) -> Iterator[Writes]:
    writes = Writes()
    stop = threading.Event()

    def write() -> None:
        with KVClient(cluster.endpoints, credentials=cluster.credentials, timeout=10, **options) as kv:
            while not stop.is_set():
                try:
                    kv.put(f"r{writes.done % 100}", "v")
                    writes.done += 1
                except KVError as exc:
                    writes.failures.append(exc)

    workers = [threading.Thread(target=write) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield writes
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def test_rotating_the_node_certificate_under_load_fails_no_request(tmp_path: Path) -> None:
    pki = TestPKI(tmp_path / "pki")
    client_files = pki.ca.issue("rotation-client", [ADMIN_ROLE]).write(tmp_path, "client")
    with ProcessCluster(tmp_path, 1, replication_factor=1, partitions=16, pki=pki) as cluster:
        cluster.start()
        address = cluster.endpoints[0]
        with steady_writes(cluster, 4, retries=0) as writes:
            for _ in range(3):
                writes.flowing()
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
        assert not writes.failures, writes.failures[:3]
        assert writes.done > 150


def test_rotating_every_node_certificate_of_a_cluster_under_load_fails_no_request(tmp_path: Path) -> None:
    """Peers dial each other with their node certificate: after a rotation each node opens new
    links with the new one, while calls on the old links finish. (The client retries as users'
    clients do; a write that fails for good is a failure.)"""
    pki = TestPKI(tmp_path / "pki")
    with ProcessCluster(tmp_path, 3, partitions=16, pki=pki, peer_ports=True) as cluster:
        cluster.start()
        with steady_writes(cluster, 3, consistency="QUORUM") as writes:
            writes.flowing()
            for node in cluster.nodes:
                pki.ca.node(node.node_id).write(pki.root, node.node_id)
            for node in cluster.nodes:
                wait_for(lambda n=node: "opening new links to the peers" in n.log_tail(400), 40, "new links")
            writes.flowing()
        assert not writes.failures, writes.failures[:3]

"""Certificate rotation without a restart: the node's certificate files are replaced in place (as
Kubernetes updates a mounted Secret) while clients write; no request fails, and new connections
get the new certificate."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from kvnode.client import KVClient, KVError
from kvnode.core.certs import ADMIN_ROLE
from kvnode.testing.processes import ProcessCluster, wait_for
from kvnode.testing.tls import TestPKI


def served_certificate(address: str, pki: TestPKI, client_files: tuple[Path, Path]) -> bytes:
    """The DER certificate a new TLS connection to ``address`` is shown."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    context.load_cert_chain(*map(str, client_files))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


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
                    lambda e=expected: served_certificate(address, pki, client_files) == e,
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

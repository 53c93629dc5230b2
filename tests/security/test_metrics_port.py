"""The metrics port over HTTPS: scrapers need only the CA, plain HTTP is not answered, and a
renewed certificate is served without a restart."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from kvnode.testing.processes import ProcessCluster, wait_for
from kvnode.testing.tls import TestPKI, served_certificate


def scrape(address: str, ca: Path) -> str:
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(f"https://{address}/metrics", timeout=5, context=context) as reply:
        return str(reply.read().decode())


def test_metrics_are_served_over_https_and_a_renewed_certificate_is_taken(tmp_path: Path) -> None:
    pki = TestPKI(tmp_path / "pki")
    cert, key = pki.ca.issue("metrics", [], hosts=["localhost", "127.0.0.1"], server=True).write(
        pki.root, "metrics"
    )
    args = ["--metrics-cert-file", str(cert), "--metrics-key-file", str(key)]
    with ProcessCluster(
        tmp_path, 1, replication_factor=1, partitions=16, metrics=True, extra_args=args
    ) as cluster:
        cluster.start()
        address = cluster[0].metrics_address
        assert "kvnode_requests_total" in scrape(address, pki.ca_file) or "kvnode_info" in scrape(
            address, pki.ca_file
        )
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read()
        renewed = pki.ca.issue("metrics", [], hosts=["localhost", "127.0.0.1"], server=True)
        renewed.write(pki.root, "metrics")
        der = x509.load_pem_x509_certificate(renewed.cert).public_bytes(Encoding.DER)
        wait_for(
            lambda: served_certificate(address, pki.ca_file) == der, 40, "the renewed metrics certificate"
        )

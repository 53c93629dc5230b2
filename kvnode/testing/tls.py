"""A test CA and the files it makes: node certificates, client certificates by role, expired ones,
and another CA's, for tests and benchmarks that run nodes with TLS (``ProcessCluster(pki=...)``)."""

from __future__ import annotations

import dataclasses
import datetime
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kvnode.client import Credentials
from kvnode.config import Security
from kvnode.core.certs import ADMIN_ROLE, DAY, CertificateAuthority

HOSTS = ("localhost", "127.0.0.1")


class TestPKI:
    """A CA whose certificate is ``ca_file`` under ``root``, and helpers to issue from it."""

    __test__ = False  # not a pytest class

    def __init__(self, root: Path, name: str = "kvstore test CA") -> None:
        self.root = root
        self.ca = CertificateAuthority.create(name)
        root.mkdir(parents=True, exist_ok=True)
        self.ca_file = root / "ca.crt"
        self.ca_file.write_bytes(self.ca.cert)

    def node_files(self, node_id: str, hosts: Sequence[str] = HOSTS) -> tuple[Path, Path]:
        """A node's certificate and key (O=kvstore:peer, server and client use), written as
        ``<node_id>.crt``/``.key``; written again, they replace the old ones in place."""
        return self.ca.node(node_id, hosts).write(self.root, node_id)

    def security(self, node_id: str, base: Security) -> Security:
        """``base`` with mutual TLS on the client port, and on the peer port if it has one; the
        node's certificate is made once and then kept (a restart finds the same files)."""
        cert, key = self.root / f"{node_id}.crt", self.root / f"{node_id}.key"
        if not cert.exists():
            self.node_files(node_id)
        tls: dict[str, Any] = {"cert_file": cert, "key_file": key, "trusted_ca_file": self.ca_file}
        if base.peer_listen:
            tls.update(peer_cert_file=cert, peer_key_file=key, peer_trusted_ca_file=self.ca_file)
        return dataclasses.replace(base, **tls)

    def client(
        self,
        name: str,
        roles: Sequence[str],
        *,
        valid_for: datetime.timedelta = DAY,
        not_before: datetime.datetime | None = None,
    ) -> Credentials:
        """Credentials of a client ``name`` holding ``roles`` (its certificate's O values)."""
        issued = self.ca.issue(name, roles, valid_for=valid_for, not_before=not_before)
        return Credentials(ca=self.ca.cert, cert=issued.cert, key=issued.key)

    def admin(self) -> Credentials:
        return self.client("test-admin", [ADMIN_ROLE])

    def expired(self, name: str, roles: Sequence[str]) -> Credentials:
        """A certificate that expired an hour ago."""
        start = datetime.datetime.now(datetime.UTC) - 2 * DAY
        return self.client(name, roles, not_before=start, valid_for=2 * DAY - datetime.timedelta(hours=1))

    @property
    def trust_only(self) -> Credentials:
        """Trusts the nodes, presents no certificate."""
        return Credentials(ca=self.ca.cert)


def served_certificate(address: str, ca_file: Path, client: tuple[Path, Path] | None = None) -> bytes:
    """The DER certificate a new TLS connection to ``address`` is shown (``client``: a certificate
    and key to present, for a port that requires one)."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca_file))
    if client is not None:
        context.load_cert_chain(*map(str, client))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ConnectionError(f"{address} showed no certificate")
    return der

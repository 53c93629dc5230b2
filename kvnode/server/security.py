"""A node's ports as its security flags make them: TLS credentials (re-read when their files
change), who is authenticated on each port, and the credentials it dials its peers with.

With no TLS flags the client port is plaintext and open to anyone who can reach it, as for local
development, and the node says so once in its log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from kvnode.config import NodeConfig
from kvnode.core.tlsfiles import TlsFiles
from kvnode.server.auth import AuthMetrics, Authorizer
from kvnode.server.serving import Port
from kvnode.server.tokens import TokenFile

log = logging.getLogger(__name__)


class PortSecurity:
    """Reads the certificate and token files named by the flags (a file that cannot be read, or a
    key that does not match its certificate, stops start-up with a message naming the flag)."""

    def __init__(self, config: NodeConfig, metrics: AuthMetrics) -> None:
        sec = config.security
        self._config = config
        self._metrics = metrics
        self.tokens = TokenFile(sec.token_file) if sec.token_file is not None else None
        self.client_tls = (
            TlsFiles(sec.cert_file, sec.key_file, sec.trusted_ca_file, what="--cert-file")
            if sec.cert_file is not None and sec.key_file is not None
            else None
        )
        self._metrics_tls = (
            TlsFiles(sec.metrics_cert_file, sec.metrics_key_file, None, what="--metrics-cert-file")
            if sec.metrics_cert_file is not None and sec.metrics_key_file is not None
            else None
        )
        self._dialed = 0
        self.peer_tls = (
            TlsFiles(sec.peer_cert_file, sec.peer_key_file, sec.peer_trusted_ca_file, what="--peer-cert-file")
            if sec.peer_cert_file is not None and sec.peer_key_file is not None
            else None
        )

    @property
    def metrics_tls(self) -> TlsFiles | None:
        """The metrics port's certificate (HTTPS; scrapers need no client certificate)."""
        return self._metrics_tls

    def client_port(self, replica_moved: Callable[[], str]) -> Port:
        """``replica_moved``: this node's peer address once the membership records it (see
        :class:`~kvnode.server.auth.Authorizer`); only consulted with --peer-listen."""
        sec = self._config.security
        tls = self.client_tls
        if tls is None:
            log.warning(
                "serving plaintext on %s: anyone who can reach it can read, write and administer this "
                "store (set --cert-file, --key-file and --trusted-ca-file; see docs/security.md)",
                self._config.listen,
            )
        elif sec.trusted_ca_file is None and self.tokens is None:
            log.warning(
                "TLS on %s, but no client is authenticated (no --trusted-ca-file, no --token-file): "
                "every caller may do everything",
                self._config.listen,
            )
        guard = Authorizer(
            self._metrics,
            certificates=sec.trusted_ca_file is not None,
            tokens=self.tokens,
            replica_moved=replica_moved if sec.peer_listen else None,
        )
        return Port(self._config.listen, "--listen", tls.server_credentials() if tls else None, guard)

    def peer_port(self) -> Port | None:
        sec = self._config.security
        if not sec.peer_listen:
            return None
        tls = self.peer_tls
        if tls is None:
            log.warning(
                "serving the peer port %s in plaintext: anyone who can reach it can write "
                "replicas (set --peer-cert-file, --peer-key-file, --peer-trusted-ca-file)",
                sec.peer_listen,
            )
        guard = Authorizer(self._metrics, certificates=sec.peer_trusted_ca_file is not None, peer_port=True)
        return Port(sec.peer_listen, "--peer-listen", tls.server_credentials() if tls else None, guard)

    def dial_credentials(self) -> grpc.ChannelCredentials | None:
        """For a new channel to a peer: the peer certificate, or with a single port the client-port
        one (a node's certificate serves both); None: plaintext. Read afresh when the files
        changed, so that a channel made after a rotation presents the new certificate."""
        tls = self._dial_tls
        if tls is None:
            return None
        credentials = tls.channel_credentials()
        self._dialed = tls.generation
        return credentials

    @property
    def dials_with_tls(self) -> bool:
        return self._dial_tls is not None

    def dial_rotated(self) -> bool:
        """Whether the certificate peers are dialed with changed since the last channel was made
        (then the links must be made again: a channel keeps the credentials it was made with)."""
        tls = self._dial_tls
        if tls is None:
            return False
        tls.refresh()
        return tls.generation != self._dialed

    @property
    def _dial_tls(self) -> TlsFiles | None:
        return self.peer_tls if self._config.security.peer_listen else self.client_tls

"""Certificate, key and CA files that are read again when they change.

Kubernetes updates a mounted Secret in place (it swaps a symlink to a new folder), and a renewed
certificate must be used without a restart. A server asks for its certificate at every handshake
(``grpc.dynamic_ssl_server_credentials``); a node dialing a peer asks when it makes a channel. Both
look at the files' status first, and read them only when it differs from the last read. A new
certificate whose key does not match (a writer that replaced one file and not yet the other) is not
taken: the old pair stays until both files agree.
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kvnode.core.errors import StartupError
from kvnode.core.logs import RateLimitedLog

log = logging.getLogger(__name__)
warnings = RateLimitedLog(log)  # gRPC asks at every handshake: one line per file set a while

Signature = tuple[tuple[int, int, int, int], ...]


def _signature(paths: Sequence[Path]) -> Signature:
    stats = [os.stat(p) for p in paths]  # follows symlinks: a swapped Secret folder changes them
    return tuple((s.st_ino, s.st_dev, s.st_size, s.st_mtime_ns) for s in stats)


def matching(cert: bytes, key: bytes) -> bool:
    """Whether ``key`` is the private key of the first certificate in ``cert``."""
    try:
        public = x509.load_pem_x509_certificate(cert).public_key()
        private = serialization.load_pem_private_key(key, password=None)
    except ValueError:
        return False
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return public.public_bytes(*fmt) == private.public_key().public_bytes(*fmt)


class TlsFiles:
    """A certificate, its key, and optionally a CA bundle, by path. ``what`` names them in
    messages (``--cert-file``...). Thread-safe: gRPC fetches server certificates on its own
    threads."""

    def __init__(self, cert: Path, key: Path, ca: Path | None, *, what: str) -> None:
        self.cert_path, self.key_path = cert, key
        self._paths = [cert, key] + ([ca] if ca is not None else [])
        self._what = what
        self._lock = threading.Lock()
        self._signature: Signature = ()
        self.cert = self.key = b""
        self.ca: bytes | None = None
        self.generation = 0  # how many consistent sets were taken
        if not self.refresh():
            raise StartupError(f"{what}: the certificate and the key do not belong together")

    def refresh(self) -> bool:
        """Read the files again if they changed; True when a new, consistent set was taken."""
        with self._lock:
            try:
                signature = _signature(self._paths)
                if signature == self._signature:
                    return False
                contents = [p.read_bytes() for p in self._paths]
            except OSError as exc:
                if not self._signature:
                    raise StartupError(f"{self._what}: cannot read {exc.filename}: {exc.strerror}") from None
                warnings.log(
                    self._what,
                    logging.WARNING,
                    "%s: cannot read %s (%s); keeping the previous certificate",
                    self._what,
                    exc.filename,
                    exc.strerror,
                )
                return False
            cert, key = contents[0], contents[1]
            if not matching(cert, key):
                if self._signature:
                    warnings.log(
                        self._what,
                        logging.WARNING,
                        "%s: the new certificate and key do not match yet; keeping the previous pair",
                        self._what,
                    )
                return False
            self._signature = signature
            self.cert, self.key = cert, key
            self.ca = contents[2] if len(contents) > 2 else None
            self.generation += 1
            log.info("%s: certificate loaded (%s)", self._what, _describe(cert))
            ends = x509.load_pem_x509_certificate(cert).not_valid_after_utc
            if ends < datetime.datetime.now(datetime.UTC):
                log.warning(
                    "%s: the certificate expired at %s UTC: peers and clients will refuse it",
                    self._what,
                    f"{ends:%Y-%m-%d %H:%M}",
                )
            return True

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials that present the current certificate at each handshake and, with a CA,
        require a client certificate signed by it."""

        def fetch() -> Any:  # None: no change (the stubs do not say so)
            return self._server_config() if self.refresh() else None

        return grpc.dynamic_ssl_server_credentials(
            self._server_config(), fetch, require_client_authentication=self.ca is not None
        )

    def _server_config(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert)], self.ca)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Credentials for a new channel to a peer, from the files as they are now."""
        self.refresh()
        return grpc.ssl_channel_credentials(self.ca, self.key, self.cert)

    async def reload_into(self, context: ssl.SSLContext) -> None:
        """Put a changed certificate into ``context`` (an HTTPS server's), for its next handshakes."""
        if self.refresh():
            context.load_cert_chain(self.cert_path, self.key_path)


def _describe(cert: bytes) -> str:
    parsed = x509.load_pem_x509_certificate(cert)
    return f"{parsed.subject.rfc4514_string()}, valid until {parsed.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"

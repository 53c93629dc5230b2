"""Who a client is to a node, and which nodes it trusts: TLS material and a bearer token.

A node with ``--cert-file`` serves TLS; with ``--trusted-ca-file`` it also wants a client
certificate, whose Organization values are the caller's roles. A client that cannot hold a
certificate sends a bearer token from the node's ``--token-file`` instead. :class:`Credentials`
carries either or both; without any, a client speaks plaintext as before.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509


@dataclass(frozen=True)
class Credentials:
    """``ca``: PEM certificates of the CA that signed the nodes' certificates (TLS is used when any
    of ``ca``/``cert`` is given; without ``ca`` the system's roots are trusted). ``cert``/``key``:
    this client's PEM certificate chain and key, for mutual TLS. ``token``: sent as
    ``authorization: Bearer <token>``. ``server_name``: the name to check the node's certificate
    against, when it differs from the host dialled (an IP address, a port-forward)."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    token: str | None = field(default=None, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        if self.token is not None and (not self.token or any(c.isspace() for c in self.token)):
            raise ValueError("a bearer token must be non-empty and contain no whitespace")

    @classmethod
    def from_files(
        cls,
        cacert: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        token: str | None = None,
        server_name: str | None = None,
    ) -> Credentials:
        """Read the PEM files (kvctl's ``--cacert --cert --key``); a missing file is an error
        naming it."""
        return cls(_read(cacert, "CA"), _read(cert, "certificate"), _read(key, "key"), token, server_name)

    @property
    def tls(self) -> bool:
        return self.ca is not None or self.cert is not None

    def channel(self, address: str, options: list[tuple[str, Any]]) -> grpc.aio.Channel:
        """A channel to ``address`` that presents these credentials on every call."""
        interceptors: Any = [BearerToken(self.token)] if self.token is not None else None
        if not self.tls:
            return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
        if self.server_name is not None:
            options = [*options, ("grpc.ssl_target_name_override", self.server_name)]
        creds = grpc.ssl_channel_credentials(self.ca, self.key, self.cert)
        return grpc.aio.secure_channel(address, creds, options=options, interceptors=interceptors)

    def explain(self, details: str) -> str | None:
        """A plain reason for a connection that failed, when TLS (or its absence) is the likely
        cause: gRPC reports these as a closed socket or an OpenSSL code."""
        text = details.lower()
        expired = self.expired_at()
        if expired is not None:
            return f"this client's certificate expired at {expired:%Y-%m-%d %H:%M} UTC (--cert)"
        if "certificate_verify_failed" in text:
            if "expired" in text:
                return "the node's certificate has expired"
            return "the node's certificate is not signed by the CA this client trusts (--cacert)"
        if "wrong_version_number" in text:
            return "the node does not speak TLS (a plaintext port?)"
        if "socket closed" in text or "handshake" in text:
            if not self.tls:
                return (
                    "the node closed the connection at once; if it serves TLS, "
                    "give --cacert, and --cert/--key or --token"
                )
            if self.cert is None:
                return "the node ended the TLS handshake: it requires a client certificate (--cert, --key)"
            return (
                "the node ended the TLS handshake: it does not accept this client's certificate "
                "(signed by a CA it does not trust?)"
            )
        return None

    def expired_at(self) -> datetime.datetime | None:
        """When this client's certificate expired, or None if it has none or it is valid."""
        if self.cert is None:
            return None
        try:
            ends = x509.load_pem_x509_certificate(self.cert).not_valid_after_utc
        except ValueError:
            return None
        return ends if ends < datetime.datetime.now(datetime.UTC) else None


def _read(path: str | Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} file {str(path)!r}: {exc.strerror}") from None


class BearerToken(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Adds ``authorization: Bearer <token>`` to each call. An interceptor rather than gRPC's call
    credentials, which only travel over TLS: a token on a plaintext loopback port is allowed, for
    local development (the node warns that it serves plaintext)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        details: Any = client_call_details
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._header)
        return await continuation(details._replace(metadata=metadata), request)

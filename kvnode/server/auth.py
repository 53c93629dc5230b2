"""Who is calling, and whether their roles allow the call.

A caller's identity is its bearer token's user (``authorization: Bearer <token>``, from
``--token-file``), else its client certificate: the common name, with the Organization values as
roles, as Kubernetes maps O to groups. The roles (docs/security.md):

- ``kvstore:read``: Get, Scan, BatchGet;
- ``kvstore:write``: read, plus Put, Delete, BatchWrite;
- ``kvstore:admin``: everything on the client port, the Admin service included;
- ``kvstore:peer``: the Replica service, only from a certificate: a token never makes a peer.

Every identity may call Admin/GetMembership: clients route by it, and peers catch up with it.

A call with no identity is UNAUTHENTICATED, one whose roles do not allow it PERMISSION_DENIED,
each message naming what is missing. Both are counted by method and logged (the identity, never
a token). Health and reflection are not guarded. A port with no way to authenticate (plaintext or
server-only TLS, no token file) guards nothing: that is the development set-up the node warns of.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from kvnode.core.certs import ADMIN_ROLE, PEER_ROLE, READ_ROLE, WRITE_ROLE
from kvnode.core.logs import RateLimitedLog
from kvnode.server.rpc import BoundHandler
from kvnode.server.tokens import TokenFile

log = logging.getLogger("kvnode.audit")
refusals = RateLimitedLog(log)

GRANTS = {
    READ_ROLE: frozenset({READ_ROLE}),
    WRITE_ROLE: frozenset({READ_ROLE, WRITE_ROLE}),
    ADMIN_ROLE: frozenset({READ_ROLE, WRITE_ROLE, ADMIN_ROLE}),
    PEER_ROLE: frozenset({PEER_ROLE}),
}
READS = frozenset({"Get", "Scan", "BatchGet"})
OPEN_ADMIN = frozenset({"GetMembership"})
"""Any identity may ask for the membership: clients route by it, peers catch up with it."""
CERT_CACHE = 4096


def required_role(service: str, method: str) -> str:
    """The role a call needs: by service (``KV``, ``Admin``, ``Replica``) and method."""
    if service == "KV":
        return READ_ROLE if method in READS else WRITE_ROLE
    if service == "Replica":
        return PEER_ROLE
    return ADMIN_ROLE


@dataclass(frozen=True)
class Identity:
    name: str
    source: str  # "certificate" or "token"
    roles: frozenset[str]

    def __str__(self) -> str:
        return f"{self.source} {self.name!r}"

    def allows(self, service: str, method: str) -> bool:
        if service == "Admin" and method in OPEN_ADMIN:
            return True
        return required_role(service, method) in _granted(self.roles)


@functools.lru_cache(maxsize=256)
def _granted(roles: frozenset[str]) -> frozenset[str]:
    """What a set of roles may do, worked out once per distinct set (every call asks)."""
    return frozenset().union(*(GRANTS.get(role, ()) for role in roles))


class AuthMetrics(Protocol):
    def auth_refused(self, method: str, code: str) -> None: ...


@functools.lru_cache(maxsize=CERT_CACHE)
def certificate_identity(pem: bytes) -> Identity:
    """Name and roles of a PEM client certificate (parsed once per certificate)."""
    subject = x509.load_pem_x509_certificate(pem).subject
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    roles = frozenset(str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return Identity(str(names[0].value) if names else subject.rfc4514_string(), "certificate", roles)


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Authorizer:
    """Guards one port's handlers. ``certificates``: the port requires client certificates (its
    identities come from them); ``tokens``: bearer tokens are accepted; ``peer_port``: only peers
    may call anything here; ``replica_moved``: this client port serves Replica only until the
    membership records this node's peer port, which it returns (docs/design.md, "Peer ports")."""

    def __init__(
        self,
        metrics: AuthMetrics,
        *,
        certificates: bool,
        tokens: TokenFile | None = None,
        peer_port: bool = False,
        replica_moved: Callable[[], str] | None = None,
    ) -> None:
        self._metrics = metrics
        self._moved = replica_moved
        self._certificates = certificates
        self._tokens = tokens
        self._peer_port = peer_port

    @property
    def enabled(self) -> bool:
        return self._certificates or self._tokens is not None

    def identify(self, context: grpc.aio.ServicerContext[Any, Any]) -> Identity:
        """The caller, or :class:`Refused` with UNAUTHENTICATED."""
        if self._tokens is not None:
            for key, value in context.invocation_metadata() or ():
                if key == "authorization":
                    scheme, _, token = str(value).partition(" ")
                    user = self._tokens.user(token.strip()) if scheme.lower() == "bearer" else None
                    if user is None:
                        raise Refused(
                            grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not known to this node"
                        )
                    return Identity(user.name, "token", frozenset(user.groups) - {PEER_ROLE})
        pems = list(context.auth_context().get("x509_pem_cert", ())) if self._certificates else []
        if pems:
            return certificate_identity(pems[0])
        raise Refused(
            grpc.StatusCode.UNAUTHENTICATED,
            "no credentials: this node needs "
            + ("a client certificate or a bearer token" if self._certificates else "a bearer token"),
        )

    def check(
        self, context: grpc.aio.ServicerContext[Any, Any], service: str, method: str
    ) -> Identity | None:
        """The caller if allowed (None when this port authenticates no one), else :class:`Refused`."""
        if service == "Replica" and self._moved is not None and (moved := self._moved()):
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Replica is served on this node's peer port {moved}, no longer on its client port",
            )
        if not self.enabled:
            return None
        identity = self.identify(context)
        if self._peer_port and PEER_ROLE not in identity.roles:
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{identity} may not call {service}/{method} on the peer port: it serves only peers "
                f"(a certificate with O={PEER_ROLE}); clients use the client port",
            )
        if not identity.allows(service, method):
            has = ", ".join(sorted(identity.roles)) or "none"
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{identity} may not call {service}/{method}: it needs the role "
                f"{required_role(service, method)} (its roles: {has})",
            )
        return identity

    def guard(self, fn: BoundHandler, service: str, method: str) -> BoundHandler:
        """``fn`` behind the check; ``fn`` itself when this port authenticates no one."""
        if not self.enabled and (service != "Replica" or self._moved is None):
            return fn
        name = f"{service}/{method}" if service != "KV" else method  # as kvnode_requests names it
        audit = service == "Admin" and method not in ("Status", "GetMembership", "ListBackups")

        @functools.wraps(fn)
        async def run(call: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                identity = self.check(context, service, method)
            except Refused as refused:
                self._metrics.auth_refused(name, refused.code.name)
                refusals.log(  # keyed by the message (method and identity): bounded, unlike peers
                    refused.message,
                    logging.WARNING,
                    "refused %s from %s: %s",
                    name,
                    context.peer(),
                    refused.message,
                )
                await context.abort(refused.code, refused.message)
                raise AssertionError("unreachable") from None  # pragma: no cover - abort raises
            if audit and identity is not None:
                log.info("%s called %s from %s", identity, name, context.peer())
            return await fn(call, context)

        return run


Guard = Callable[[BoundHandler, str, str], BoundHandler]

"""The identities a store's certificates carry, and their Secrets (or cert-manager Certificates).

Every identity is one Secret with ``tls.crt``, ``tls.key`` and ``ca.crt``, the layout of
cert-manager's Secrets, so a pod mounts the same files whichever of the two issued them.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvnode.core.certs import ADMIN_ROLE, PEER_ROLE, READ_ROLE, WRITE_ROLE, KeyPair
from kvoperator import constants as c
from kvoperator import names
from kvoperator.builders.common import Body, child_metadata, stamp_hash
from kvoperator.config import OperatorConfig
from kvoperator.pki import is_ip_address
from kvoperator.spec import IssuerRef

CLIENT_ROLES = {"read": READ_ROLE, "write": WRITE_ROLE, "admin": ADMIN_ROLE}
CERTIFICATE_API_VERSION = "cert-manager.io/v1"


@dataclass(frozen=True)
class Identity:
    """One certificate the store needs: where it is kept, whom it names, which roles (O values)
    it carries, and the host names it serves (none: a client certificate)."""

    secret: str
    common_name: str
    organizations: tuple[str, ...]
    hosts: tuple[str, ...] = ()
    component: str = "client"


def node_hosts(store: str, namespace: str, config: OperatorConfig) -> tuple[str, ...]:
    """The names a node certificate serves: every pod of the headless Service (one wildcard, so
    scaling needs no new certificate), the client Service, and loopback (kubectl port-forward)."""
    headless = names.headless_service(store)
    client = names.client_service(store)
    hosts = [f"*.{headless}.{namespace}.svc", client, f"{client}.{namespace}", f"{client}.{namespace}.svc"]
    if config.cluster_domain:
        hosts += [f"*.{headless}.{namespace}.svc.{config.cluster_domain}"]
        hosts += [f"{client}.{namespace}.svc.{config.cluster_domain}"]
    return (*hosts, "localhost", "127.0.0.1", "::1")


def identities(store: str, namespace: str, config: OperatorConfig) -> list[Identity]:
    """The node certificate, the operator's own, and one client certificate per role."""
    node = Identity(
        secret=names.node_tls_secret(store),
        common_name=f"{store}.{namespace}",
        organizations=(PEER_ROLE,),
        hosts=node_hosts(store, namespace, config),
        component="node",
    )
    operator = Identity(names.operator_tls_secret(store), c.MANAGER, (ADMIN_ROLE,), component="operator")
    clients = [
        Identity(names.client_secret(store, short), f"{store}-{short}", (role,))
        for short, role in CLIENT_ROLES.items()
    ]
    return [node, operator, *clients]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def secret_data(secret: Mapping[str, Any], key: str) -> bytes:
    """One value of a Secret as bytes (b"" when it has none)."""
    value = (secret.get("data") or {}).get(key)
    return base64.b64decode(value) if value else b""


def build_ca_secret(owner: Mapping[str, Any], ca: KeyPair) -> Body:
    store = owner["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": child_metadata(owner, names.ca_secret(store), component="ca"),
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": _b64(ca.cert), "tls.key": _b64(ca.key)},
    }


def build_tls_secret(owner: Mapping[str, Any], identity: Identity, pair: KeyPair, ca_cert: bytes) -> Body:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": child_metadata(owner, identity.secret, component=identity.component),
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": _b64(pair.cert), "tls.key": _b64(pair.key), "ca.crt": _b64(ca_cert)},
    }


def build_certificate(owner: Mapping[str, Any], identity: Identity, issuer: IssuerRef) -> Body:
    """A cert-manager Certificate that keeps ``identity.secret`` issued and renewed."""
    usages = ["digital signature", "key encipherment", "client auth"]
    cert_spec: Body = {
        "secretName": identity.secret,
        "commonName": identity.common_name,
        "subject": {"organizations": list(identity.organizations)},
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "duration": "2160h",  # 90 days, renewed with a third left (pki.py's policy)
        "renewBefore": "720h",
        "usages": [*usages, "server auth"] if identity.hosts else usages,
        "issuerRef": {"name": issuer.name, "kind": issuer.kind, "group": issuer.group},
    }
    if identity.hosts:
        cert_spec["dnsNames"] = [h for h in identity.hosts if not is_ip_address(h)]
        cert_spec["ipAddresses"] = [h for h in identity.hosts if is_ip_address(h)]
    body: Body = {
        "apiVersion": CERTIFICATE_API_VERSION,
        "kind": "Certificate",
        "metadata": child_metadata(owner, identity.secret, component=identity.component),
        "spec": cert_spec,
    }
    return stamp_hash(body, cert_spec)

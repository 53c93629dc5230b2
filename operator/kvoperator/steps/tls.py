"""The store's certificates: a CA of its own and the certificates it issues, each kept in a Secret
and issued again well before it expires; or, with ``spec.tls.issuerRef``, cert-manager
Certificates that do the same.

A renewed Secret reaches the pods' mounted files without a restart (the kubelet updates them in
place) and the nodes read them again when they change. The CA lives ten years and is not rotated
by the operator (docs/kubernetes-security.md says how to do it by hand).
"""

from __future__ import annotations

from typing import Any

from kvnode.core.certs import CertificateAuthority, KeyPair
from kvoperator import kube, names, pki
from kvoperator.builders.common import is_owned_by
from kvoperator.builders.tls import (
    Identity,
    build_ca_secret,
    build_certificate,
    build_tls_secret,
    identities,
    secret_data,
)
from kvoperator.children import ensure
from kvoperator.passes import Pass
from kvoperator.spec import IssuerRef

CERTIFICATE_MANAGED = ["/spec"]


async def run(p: Pass) -> None:
    spec = p.observed.spec
    if spec is None or not spec.tls.enabled:
        return
    wanted = identities(p.observed.name, p.observed.namespace, p.ctx.config)
    if spec.tls.issuer_ref is not None:
        await _by_cert_manager(p, spec.tls.issuer_ref, wanted)
        return
    ca = await _ca(p)
    if ca is None:
        return
    for identity in wanted:
        await _keep_issued(p, ca, identity)


async def _by_cert_manager(p: Pass, issuer: IssuerRef, wanted: list[Identity]) -> None:
    for identity in wanted:
        desired = build_certificate(p.store, identity, issuer)
        try:
            await ensure(p, kube.CERTIFICATES, desired, CERTIFICATE_MANAGED)
        except kube.NotFound:
            p.report.degrade(
                "CertManagerMissing",
                "spec.tls.issuerRef needs cert-manager, but this cluster has no "
                "certificates.cert-manager.io/v1 API: install cert-manager, or remove issuerRef",
            )
            return


def _foreign(p: Pass, secret: dict[str, Any]) -> bool:
    if is_owned_by(secret, p.observed.uid):
        return False
    name = secret["metadata"]["name"]
    p.report.degrade(
        "ForeignObject", f"Secret {name} exists and is not owned by this KVStore; it is left alone"
    )
    return True


async def _ca(p: Pass) -> CertificateAuthority | None:
    """The store's CA, made on the first pass (None when a Secret of that name is someone else's)."""
    namespace, name = p.observed.namespace, names.ca_secret(p.observed.name)
    secret = await p.ctx.kube.get(kube.SECRETS, namespace, name)
    if secret is None:
        ca = CertificateAuthority.create(f"{p.observed.name}.{namespace} kvstore CA")
        try:
            await p.ctx.kube.create(kube.SECRETS, namespace, build_ca_secret(p.store, ca.pair))
        except kube.Conflict:  # another pass made it since we looked: use theirs next pass
            return None
        p.report.wrote(f"created Secret {name}")
        p.ctx.events.normal(p.store, "CreatedCA", f"created the store's certificate authority ({name})")
        return ca
    if _foreign(p, secret):
        return None
    return CertificateAuthority(KeyPair(secret_data(secret, "tls.crt"), secret_data(secret, "tls.key")))


async def _keep_issued(p: Pass, ca: CertificateAuthority, identity: Identity) -> None:
    """Issue ``identity``'s certificate if its Secret is missing, or its certificate is due."""
    namespace = p.observed.namespace
    secret = await p.ctx.kube.get(kube.SECRETS, namespace, identity.secret)
    if secret is not None and _foreign(p, secret):
        return
    why = "it has none" if secret is None else pki.renewal_due(secret_data(secret, "tls.crt"), ca.cert, p.now)
    if not why and secret is not None and secret_data(secret, "ca.crt") != ca.cert:
        why = "its CA certificate is not the store's"
    if not why:
        return
    pair = ca.issue(
        identity.common_name,
        identity.organizations,
        hosts=identity.hosts,
        server=bool(identity.hosts),
        valid_for=pki.LEAF_LIFETIME,
        not_before=p.now - pki.BACKDATE,
    )
    body = build_tls_secret(p.store, identity, pair, ca.cert)
    if secret is None:
        await p.ctx.kube.create(kube.SECRETS, namespace, body)
        p.report.wrote(f"created Secret {identity.secret}")
    else:
        await p.ctx.kube.patch(kube.SECRETS, namespace, identity.secret, {"data": body["data"]})
        p.report.wrote(f"renewed Secret {identity.secret}")
    p.ctx.events.normal(
        p.store,
        "IssuedCertificate",
        f"issued {identity.common_name}'s certificate into Secret {identity.secret} ({why}); "
        f"valid until {pair.not_after:%Y-%m-%dT%H:%M:%SZ}",
    )

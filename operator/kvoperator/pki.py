"""When a store's certificate must be issued again. (Making the CA and the certificates is
kvnode.core.certs, shared with ``kvnode local-cluster --tls`` and the tests.)

Certificates live 90 days and are renewed when less than a third of their life is left
(cert-manager's default), so a renewal that fails has weeks to succeed before anything expires.
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.exceptions import InvalidSignature

LEAF_LIFETIME = datetime.timedelta(days=90)
# Certificates are dated a little in the past: a node whose clock is behind the operator's would
# otherwise refuse a certificate that is not valid yet.
BACKDATE = datetime.timedelta(minutes=5)


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def renewal_due(cert_pem: bytes, ca_cert_pem: bytes, now: datetime.datetime) -> str:
    """Why ``cert_pem`` must be issued again ("" if it need not): it does not parse, was not
    signed by this CA, or has less than a third of its life left."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError:
        return "it is not a PEM certificate"
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return "it was not issued by the store's CA"
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now >= end - (end - start) / 3:
        return f"it expires at {end:%Y-%m-%dT%H:%M:%SZ}"
    return ""

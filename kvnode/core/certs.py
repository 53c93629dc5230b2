"""Making a CA and the certificates it signs: for ``kvnode local-cluster --tls``, the tests, and the
operator's own CA. One place, so that every certificate a kvstore tool makes has the shape the
nodes expect: roles as Organization values, both serverAuth and clientAuth for node certificates.

Keys are ECDSA P-256: fast to make (tests make many) and to handshake with.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEER_ROLE = "kvstore:peer"
ADMIN_ROLE = "kvstore:admin"
WRITE_ROLE = "kvstore:write"
READ_ROLE = "kvstore:read"
ROLES = (READ_ROLE, WRITE_ROLE, ADMIN_ROLE, PEER_ROLE)

DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM key."""

    cert: bytes
    key: bytes

    def write(self, folder: Path, name: str) -> tuple[Path, Path]:
        """``<name>.crt`` and ``<name>.key`` in ``folder`` (the key readable by its owner only);
        each file is replaced whole, so that a reader never sees half of one."""
        folder.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
        _replace(key_path, self.key, 0o600)
        _replace(cert_path, self.cert, 0o644)
        return cert_path, key_path

    @property
    def not_after(self) -> datetime.datetime:
        return x509.load_pem_x509_certificate(self.cert).not_valid_after_utc


def _replace(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CertificateAuthority:
    """A CA that signs node and client certificates."""

    def __init__(self, pair: KeyPair) -> None:
        self.pair = pair
        self._cert = x509.load_pem_x509_certificate(pair.cert)
        loaded = serialization.load_pem_private_key(pair.key, password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key must be an ECDSA key")
        self._key = loaded

    @classmethod
    def create(
        cls, name: str = "kvstore CA", valid_for: datetime.timedelta = 3650 * DAY
    ) -> CertificateAuthority:
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + valid_for)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)))

    @property
    def cert(self) -> bytes:
        return self.pair.cert

    def issue(
        self,
        common_name: str,
        organizations: Sequence[str] = (),
        *,
        hosts: Iterable[str] = (),
        server: bool = False,
        client: bool = True,
        valid_for: datetime.timedelta = 365 * DAY,
        not_before: datetime.datetime | None = None,
    ) -> KeyPair:
        """A certificate for ``common_name`` whose O values are ``organizations`` (the roles).
        ``hosts`` become DNS or IP SANs; ``server``/``client`` choose the extended key usages (a
        node's certificate has both: it serves, and it dials its peers)."""
        key = _new_key()
        names = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        names.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        start = not_before or _now() - datetime.timedelta(minutes=5)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(names))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + valid_for)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        sans = [_san(host) for host in hosts]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))

    def node(self, name: str, hosts: Iterable[str] = ("localhost", "127.0.0.1")) -> KeyPair:
        """A node's certificate: serves and dials, as ``kvstore:peer``."""
        return self.issue(name, [PEER_ROLE], hosts=hosts, server=True, client=True)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def organizations(cert_der: bytes) -> tuple[str, ...]:
    """The O values of a DER certificate (what the node reads roles from)."""
    cert = x509.load_der_x509_certificate(cert_der)
    return tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))

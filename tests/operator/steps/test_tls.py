"""The TLS step: a CA of the store's own, the certificates it issues, renewal well before expiry;
or cert-manager Certificates when the spec names an issuer."""

from __future__ import annotations

import base64
import datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kvoperator import kube
from kvoperator.builders.tls import secret_data
from kvoperator.steps import tls

from kvnode.core.certs import CertificateAuthority
from tests.operator.steps.world import NS, T0, World

SECRETS = ["kv-node-tls", "kv-operator-tls", "kv-client-read", "kv-client-write", "kv-client-admin"]


def secret(world: World, name: str) -> dict[str, Any]:
    body = world.kube.object(kube.SECRETS, NS, name)
    assert body is not None, f"no Secret {name}"
    return body


def certificate(world: World, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(secret_data(secret(world, name), "tls.crt"))


def roles(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


async def test_a_new_store_gets_a_ca_and_every_certificate_signed_by_it(world: World) -> None:
    world.store()
    p = await world.run(tls.run)
    ca_secret = secret(world, "kv-ca")
    assert ca_secret["metadata"]["ownerReferences"][0]["uid"] == "store-uid"
    ca = x509.load_pem_x509_certificate(secret_data(ca_secret, "tls.crt"))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for name in SECRETS:
        body = secret(world, name)
        assert body["type"] == "kubernetes.io/tls"
        assert secret_data(body, "ca.crt") == secret_data(ca_secret, "tls.crt")
        certificate(world, name).verify_directly_issued_by(ca)
    assert p.report.writes == [f"created Secret {n}" for n in ["kv-ca", *SECRETS]]
    node = certificate(world, "kv-node-tls")
    assert roles(node) == ["kvstore:peer"]
    usages = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "*.kv-headless.ns.svc" in sans.get_values_for_type(x509.DNSName)
    assert "kv.ns.svc" in sans.get_values_for_type(x509.DNSName)
    assert roles(certificate(world, "kv-operator-tls")) == ["kvstore:admin"]
    assert roles(certificate(world, "kv-client-read")) == ["kvstore:read"]
    assert roles(certificate(world, "kv-client-write")) == ["kvstore:write"]
    assert roles(certificate(world, "kv-client-admin")) == ["kvstore:admin"]
    client_usages = certificate(world, "kv-client-read").extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    )
    assert list(client_usages.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert world.events.reasons().count("IssuedCertificate") == len(SECRETS)


async def test_a_second_pass_writes_nothing(world: World) -> None:
    world.store()
    await world.run(tls.run)
    world.kube.forget_calls()
    await world.run(tls.run, now=T0 + datetime.timedelta(days=30))
    assert world.kube.writes == []


async def test_a_certificate_near_expiry_is_renewed_from_the_same_ca(world: World) -> None:
    world.store()
    await world.run(tls.run)
    before = {name: certificate(world, name) for name in SECRETS}
    ca_before = secret_data(secret(world, "kv-ca"), "tls.crt")
    later = T0 + datetime.timedelta(days=61)  # a third of 90 days left
    p = await world.run(tls.run, now=later)
    assert p.report.writes == [f"renewed Secret {n}" for n in SECRETS]
    assert secret_data(secret(world, "kv-ca"), "tls.crt") == ca_before
    for name, old in before.items():
        new = certificate(world, name)
        assert new.not_valid_after_utc > old.not_valid_after_utc
        assert new.not_valid_before_utc <= later < new.not_valid_after_utc
        assert roles(new) == roles(old)


async def test_a_certificate_from_another_ca_is_issued_again(world: World) -> None:
    world.store()
    await world.run(tls.run)
    other = CertificateAuthority.create("someone else").issue("kv-read", ["kvstore:read"])
    data = world.kube.objects[kube.SECRETS, NS, "kv-client-read"]["data"]
    data["tls.crt"] = base64.b64encode(other.cert).decode()
    p = await world.run(tls.run)
    assert p.report.writes == ["renewed Secret kv-client-read"]
    ca = x509.load_pem_x509_certificate(secret_data(secret(world, "kv-ca"), "tls.crt"))
    certificate(world, "kv-client-read").verify_directly_issued_by(ca)


async def test_a_secret_of_someone_else_is_left_alone(world: World) -> None:
    world.store()
    foreign = {"metadata": {"name": "kv-client-write", "namespace": NS}, "data": {"tls.crt": "eA=="}}
    world.kube.put(kube.SECRETS, foreign)
    p = await world.run(tls.run)
    assert secret(world, "kv-client-write")["data"] == {"tls.crt": "eA=="}
    assert any("kv-client-write" in message for _, message in p.report.degraded)


async def test_tls_off_makes_no_certificates(world: World) -> None:
    world.store(tls={"enabled": False})
    await world.run(tls.run)
    assert world.kube.writes == []


async def test_an_issuer_ref_makes_cert_manager_certificates_instead(world: World) -> None:
    world.store(tls={"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}})
    await world.run(tls.run)
    assert world.kube.object(kube.SECRETS, NS, "kv-ca") is None
    node = world.kube.object(kube.CERTIFICATES, NS, "kv-node-tls")
    assert node is not None
    issuer = {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert node["spec"]["issuerRef"] == issuer
    assert node["spec"]["secretName"] == "kv-node-tls"
    assert node["spec"]["subject"] == {"organizations": ["kvstore:peer"]}
    assert "server auth" in node["spec"]["usages"] and "127.0.0.1" in node["spec"]["ipAddresses"]
    read = world.kube.object(kube.CERTIFICATES, NS, "kv-client-read")
    assert read is not None and read["spec"]["usages"][-1] == "client auth"
    assert "dnsNames" not in read["spec"]
    world.kube.forget_calls()
    await world.run(tls.run)
    assert world.kube.writes == []


async def test_the_operator_then_talks_to_the_nodes_as_admin_with_its_own_certificate(world: World) -> None:
    world.store()
    await world.run(tls.run)
    world.admin.credentials.clear()
    await world.new_pass()
    (credentials,) = world.admin.credentials
    assert credentials is not None and credentials.cert is not None
    assert credentials.ca == secret_data(secret(world, "kv-ca"), "tls.crt")
    assert roles(x509.load_pem_x509_certificate(credentials.cert)) == ["kvstore:admin"]
    assert credentials.server_name == "kv.ns.svc"  # in the node certificate whatever address is dialled


async def test_without_tls_the_operator_dials_plaintext(world: World) -> None:
    world.store(tls={"enabled": False})
    await world.new_pass()
    assert world.admin.credentials == [None]


async def test_an_issuer_ref_without_cert_manager_says_so(world: World) -> None:
    world.store(replicas=1, tls={"issuerRef": {"name": "corp-ca"}})
    world.kube.missing_resources.add(kube.CERTIFICATES)
    p = await world.run(tls.run)
    assert [reason for reason, _ in p.report.degraded] == ["CertManagerMissing"]

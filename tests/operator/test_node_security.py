"""The StatefulSet and Services of a store with TLS on (the default): the node's TLS and peer-port
flags, the certificate mounted whole, probes the kubelet can run, no service-account token."""

from __future__ import annotations

from typing import Any

import pytest
from kvoperator.builders.services import build_client_service, build_headless_service
from kvoperator.builders.statefulset import build_statefulset
from kvoperator.config import AddressMode, OperatorConfig
from kvoperator.spec import SpecError, parse_store_spec

from tests.operator.test_builders import CONFIG, OWNER, env


def pod_spec(sts: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = sts["spec"]["template"]["spec"]
    return result


def test_tls_is_on_by_default_with_every_port_served_from_the_mounted_secret() -> None:
    spec = parse_store_spec({})
    assert spec.tls.enabled and spec.network_policy.enabled
    sts = build_statefulset(OWNER, spec, 3, CONFIG)
    e = {k: v.get("value") for k, v in env(sts).items()}
    for flag in ("CERT_FILE", "PEER_CERT_FILE", "METRICS_CERT_FILE"):
        assert e[f"KVNODE_{flag}"] == "/etc/kvnode/tls/tls.crt"
    for flag in ("KEY_FILE", "PEER_KEY_FILE", "METRICS_KEY_FILE"):
        assert e[f"KVNODE_{flag}"] == "/etc/kvnode/tls/tls.key"
    assert e["KVNODE_TRUSTED_CA_FILE"] == e["KVNODE_PEER_TRUSTED_CA_FILE"] == "/etc/kvnode/tls/ca.crt"
    assert e["KVNODE_PEER_LISTEN"] == "0.0.0.0:7001"
    assert e["KVNODE_PEER_ADVERTISE"] == "$(POD_NAME).demo-headless.$(POD_NAMESPACE).svc:7001"
    assert e["KVNODE_BACKUP_ROOT"] == "/backups"
    pod = pod_spec(sts)
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "tls", "secret": {"secretName": "demo-node-tls", "defaultMode": 0o440}} in pod["volumes"]
    container = pod["containers"][0]
    # the whole folder, never subPath: only then does the kubelet update renewed files in place
    assert {"name": "tls", "mountPath": "/etc/kvnode/tls", "readOnly": True} in container["volumeMounts"]
    assert all("subPath" not in m for m in container["volumeMounts"])
    assert {"name": "peer", "containerPort": 7001, "protocol": "TCP"} in container["ports"]
    # the kubelet's gRPC probe cannot speak TLS
    assert container["readinessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert "grpc" not in container["readinessProbe"] and "grpc" not in container["livenessProbe"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "10Gi"}} in pod["volumes"]


def test_without_tls_the_node_keeps_its_peer_port_and_grpc_probes() -> None:
    spec = parse_store_spec({"tls": {"enabled": False}})
    config = OperatorConfig(address_mode=AddressMode.POD_IP)
    sts = build_statefulset(OWNER, spec, 3, config)
    e = env(sts)
    assert not any("CERT_FILE" in name or "KEY_FILE" in name for name in e)
    assert e["KVNODE_PEER_ADVERTISE"]["value"] == "$(POD_IP):7001"
    pod = pod_spec(sts)
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["readinessProbe"]["grpc"] == {"port": 7000, "service": ""}


def test_the_peer_port_is_on_the_headless_service_only() -> None:
    spec = parse_store_spec({"peerPort": 7101})
    headless = {p["name"]: p["port"] for p in build_headless_service(OWNER, spec)["spec"]["ports"]}
    assert headless == {"grpc": 7000, "metrics": 9100, "peer": 7101}
    client = [p["name"] for p in build_client_service(OWNER, spec)["spec"]["ports"]]
    assert client == ["grpc"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"tls": {"enabled": "yes"}}, "spec.tls.enabled must be true or false"),
        ({"tls": {"issuerRef": {"kind": "Issuer"}}}, "spec.tls.issuerRef.name is required"),
        ({"tls": {"issuerRef": {"name": "x", "kind": "Vault"}}}, "spec.tls.issuerRef.kind must be one of"),
        ({"networkPolicy": {"clientPodSelector": "all"}}, "spec.networkPolicy.clientPodSelector must be"),
        ({"peerPort": 0}, "spec.peerPort must be between 1 and 65535"),
    ],
)
def test_bad_security_specs_name_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_store_spec(spec)

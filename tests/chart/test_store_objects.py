"""The objects the operator makes for a store with the chart's defaults (TLS, NetworkPolicy, the
certificates' Secrets, the StatefulSet that mounts them), validated like the chart's own objects
against the Kubernetes 1.30 and 1.33 OpenAPI schemas (kubernetes-validate --strict)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from kvoperator.builders.network_policy import build_network_policy
from kvoperator.builders.services import build_client_service, build_headless_service
from kvoperator.builders.statefulset import build_statefulset
from kvoperator.builders.tls import build_ca_secret, build_tls_secret, identities
from kvoperator.config import OperatorConfig
from kvoperator.spec import parse_store_spec

from kvnode.core.certs import CertificateAuthority
from tests.chart.helpers import KUBE_VERSIONS, render

CONFIG = OperatorConfig(operator_namespace="kvstore-system")


def store_objects(spec: dict[str, Any]) -> list[dict[str, Any]]:
    owner = {
        "apiVersion": "kvstore.dev/v1alpha1",
        "kind": "KVStore",
        "metadata": {"name": "demo", "namespace": "shop", "uid": "u-1"},
    }
    parsed = parse_store_spec(spec)
    ca = CertificateAuthority.create("test")
    secrets = [
        build_tls_secret(owner, ident, ca.issue(ident.common_name, ident.organizations), ca.cert)
        for ident in identities("demo", "shop", CONFIG)
    ]
    return [
        build_statefulset(owner, parsed, 3, CONFIG),
        build_headless_service(owner, parsed),
        build_client_service(owner, parsed),
        build_network_policy(owner, parsed, CONFIG),
        build_ca_secret(owner, ca.pair),
        *secrets,
    ]


@pytest.mark.parametrize(
    "spec",
    [
        {},  # the defaults: TLS and a NetworkPolicy
        {
            "tls": {"enabled": False},
            "networkPolicy": {"clientNamespaceSelector": {"matchLabels": {"a": "b"}}},
        },
        {"networkPolicy": {"clientPodSelector": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}}},
    ],
)
def test_a_stores_objects_are_valid(spec: dict[str, Any]) -> None:
    for obj in store_objects(spec):
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']} invalid for {version}: {exc.message}")


def test_the_store_network_policy_admits_the_charts_operator_pod() -> None:
    """The operator rule of a store's NetworkPolicy selects the pod the chart's Deployment makes."""
    policy = next(o for o in store_objects({}) if o["kind"] == "NetworkPolicy")
    client_rule = policy["spec"]["ingress"][1]
    operator_peer = client_rule["from"][-1]
    rendered = render({})
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert operator_peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
    namespace = operator_peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    assert namespace == rendered.one("Deployment")["metadata"]["namespace"]
    env = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    by_name = {e["name"]: e for e in env}
    assert by_name["KVSTORE_OPERATOR_OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )

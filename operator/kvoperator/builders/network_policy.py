"""The store's NetworkPolicy: who may open a connection to which port of its pods.

- the peer port: the store's own pods only (Replica and transfers carry every key and value);
- the client port: the pods and namespaces ``spec.networkPolicy`` selects (by default every pod of
  the store's namespace), the store's own pods (a node forwards to its peers' client port during a
  legacy single-port upgrade), and the operator;
- the metrics port: pods of the namespaces that ``metricsNamespaceSelector`` selects.

Egress is left open: nodes dial only their peers, and a policy on egress would also have to allow
DNS, which differs from cluster to cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvoperator import constants as c
from kvoperator import names
from kvoperator.builders.common import Body, child_metadata, stamp_hash
from kvoperator.config import OperatorConfig
from kvoperator.spec import StoreSpec

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _port(number: int) -> Body:
    return {"protocol": "TCP", "port": number}


def _operator_peer(config: OperatorConfig) -> Body:
    peer: Body = {"podSelector": {"matchLabels": {c.LABEL_COMPONENT: c.OPERATOR_COMPONENT}}}
    if config.operator_namespace:
        peer["namespaceSelector"] = {"matchLabels": {NAMESPACE_NAME_LABEL: config.operator_namespace}}
    return peer


def _client_peers(store: str, spec: StoreSpec, config: OperatorConfig) -> list[Body]:
    policy = spec.network_policy
    own_pods: Body = {"podSelector": {"matchLabels": names.selector_labels(store)}}
    chosen: Body = {}
    if policy.client_pods is not None:
        chosen["podSelector"] = dict(policy.client_pods)
    if policy.client_namespaces is not None:
        chosen["namespaceSelector"] = dict(policy.client_namespaces)
    if not chosen:
        chosen = {"podSelector": {}}  # every pod of the store's namespace
    return [chosen, own_pods, _operator_peer(config)]


def build_network_policy(owner: Mapping[str, Any], spec: StoreSpec, config: OperatorConfig) -> Body:
    store = owner["metadata"]["name"]
    own_pods: Body = {"podSelector": {"matchLabels": names.selector_labels(store)}}
    policy_spec: Body = {
        "podSelector": {"matchLabels": names.selector_labels(store)},
        "policyTypes": ["Ingress"],
        "ingress": [
            {"from": [own_pods], "ports": [_port(spec.peer_port)]},
            {"from": _client_peers(store, spec, config), "ports": [_port(spec.port)]},
            {
                "from": [{"namespaceSelector": dict(spec.network_policy.metrics_namespaces)}],
                "ports": [_port(spec.metrics_port)],
            },
        ],
    }
    body: Body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(owner, names.network_policy(store)),
        "spec": policy_spec,
    }
    return stamp_hash(body, policy_spec)

"""The headless Service (stable per-pod DNS, peers) and the client Service (load-balanced access)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvoperator import names
from kvoperator.builders.common import Body, child_metadata, stamp_hash
from kvoperator.spec import StoreSpec


def _ports(spec: StoreSpec) -> list[Body]:
    return [
        {"name": "grpc", "port": spec.port, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
        {"name": "metrics", "port": spec.metrics_port, "targetPort": "metrics", "protocol": "TCP"},
    ]


def _peer_port(spec: StoreSpec) -> Body:
    """Peers only: on the headless Service (which peers dial by pod name), never the client one."""
    return {
        "name": "peer",
        "port": spec.peer_port,
        "targetPort": "peer",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }


def build_headless_service(owner: Mapping[str, Any], spec: StoreSpec) -> Body:
    store = owner["metadata"]["name"]
    service_spec: Body = {
        "clusterIP": "None",
        # Pods that are not Ready yet (a new or rebuilding node) must still be reachable by name:
        # their peers stream data to them before they serve.
        "publishNotReadyAddresses": True,
        "selector": names.selector_labels(store),
        "ports": [*_ports(spec), _peer_port(spec)],
    }
    body: Body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(owner, names.headless_service(store)),
        "spec": service_spec,
    }
    return stamp_hash(body, service_spec)


def build_client_service(owner: Mapping[str, Any], spec: StoreSpec) -> Body:
    store = owner["metadata"]["name"]
    service_spec: Body = {
        "type": "ClusterIP",
        "selector": names.selector_labels(store),
        "ports": _ports(spec)[:1],
    }
    body: Body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(owner, names.client_service(store), component="client"),
        "spec": service_spec,
    }
    return stamp_hash(body, service_spec)

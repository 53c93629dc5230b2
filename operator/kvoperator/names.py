"""Names and labels of a store's child objects, and how members are addressed."""

from __future__ import annotations

import re

from kvoperator import constants as c
from kvoperator.config import AddressMode, OperatorConfig


def statefulset(store: str) -> str:
    return store


def headless_service(store: str) -> str:
    return f"{store}-headless"


def client_service(store: str) -> str:
    return store


def configmap(store: str) -> str:
    return f"{store}-config"


def pdb(store: str) -> str:
    return store


def pod(store: str, ordinal: int) -> str:
    return f"{store}-{ordinal}"


def ordinal_of(store: str, pod_name: str) -> int | None:
    """The ordinal of ``<store>-<n>``; None for any other name."""
    match = re.fullmatch(re.escape(store) + r"-(0|[1-9][0-9]*)", pod_name)
    return int(match.group(1)) if match else None


def selector_labels(store: str) -> dict[str, str]:
    """The labels that select a store's pods (the StatefulSet's selector, which is immutable)."""
    return {c.LABEL_NAME: c.APP_NAME, c.LABEL_INSTANCE: store}


def labels(store: str, component: str = "node") -> dict[str, str]:
    return {
        **selector_labels(store),
        c.LABEL_COMPONENT: component,
        c.LABEL_MANAGED_BY: c.MANAGER,
        c.LABEL_STORE: store,
    }


def pod_dns_name(store: str, ordinal: int, namespace: str, config: OperatorConfig) -> str:
    suffix = f"svc.{config.cluster_domain}" if config.cluster_domain else "svc"
    return f"{pod(store, ordinal)}.{headless_service(store)}.{namespace}.{suffix}"


def dns_address(store: str, ordinal: int, namespace: str, port: int, config: OperatorConfig) -> str:
    return f"{pod_dns_name(store, ordinal, namespace, config)}:{port}"


def member_address(
    store: str, ordinal: int, namespace: str, port: int, pod_ip: str | None, config: OperatorConfig
) -> str | None:
    """How the operator and the other members reach a member: its DNS name, or its pod IP (None
    while the pod has none)."""
    if config.address_mode is AddressMode.POD_IP:
        if not pod_ip:
            return None
        host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
        return f"{host}:{port}"
    return dns_address(store, ordinal, namespace, port, config)

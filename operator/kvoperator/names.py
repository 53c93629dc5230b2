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


def network_policy(store: str) -> str:
    return store


def ca_secret(store: str) -> str:
    """The store's CA: its certificate and key (only the operator reads the key)."""
    return f"{store}-ca"


def node_tls_secret(store: str) -> str:
    """The node certificate every pod of the store mounts."""
    return f"{store}-node-tls"


def operator_tls_secret(store: str) -> str:
    """The operator's own ``kvstore:admin`` certificate for this store's nodes."""
    return f"{store}-operator-tls"


def client_secret(store: str, role: str) -> str:
    """A client identity for applications (``read``, ``write``) or people (``admin``)."""
    return f"{store}-client-{role}"


def pod(store: str, ordinal: int) -> str:
    return f"{store}-{ordinal}"


def ordinal_of(store: str, pod_name: str) -> int | None:
    """The ordinal of ``<store>-<n>``; None for any other name."""
    match = re.fullmatch(re.escape(store) + r"-(0|[1-9][0-9]*)", pod_name)
    return int(match.group(1)) if match else None


NODE_COMPONENT = "node"

# The longest StatefulSet name: the StatefulSet controller labels each pod
# ``controller-revision-hash: <statefulset>-<hash of up to 10 characters>``, and a label value is at
# most 63 characters (kubernetes#64023; pkg/controller/history/controller_history.go).
MAX_STATEFULSET_NAME = 52
# A Service name is a DNS-1035 label (pkg/apis/core/validation: ValidateServiceName).
MAX_DNS1035_LABEL = 63
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def name_problem(store: str) -> str | None:
    """Why a store cannot have this name (its children's names would be refused), or None.

    The CRD admits any DNS-subdomain name; refusing here, once and with a clear condition, beats a
    422 from the API server on every pass."""
    sts = statefulset(store)
    if len(sts) > MAX_STATEFULSET_NAME:
        return (
            f"store name {store!r} is {len(sts)} characters; a StatefulSet name may have at most "
            f"{MAX_STATEFULSET_NAME} (its pods' controller-revision-hash label must fit in 63)"
        )
    for service in (headless_service(store), client_service(store)):
        if len(service) > MAX_DNS1035_LABEL or not _DNS1035_LABEL.fullmatch(service):
            return (
                f"store name {store!r} gives the Service name {service!r}, which is not a DNS-1035 "
                "label (lower-case letters, digits and '-', starting with a letter, no dots, "
                f"at most {MAX_DNS1035_LABEL} characters)"
            )
    return None


def selector_labels(store: str) -> dict[str, str]:
    """The labels that select a store's node pods (Services, PDB, anti-affinity, new StatefulSets).

    The component label keeps the operator's own pod out: it carries ``app.kubernetes.io/name`` and
    ``instance`` too, and may have the same instance value as a store. A StatefulSet's selector is
    immutable, so one created before the component label keeps :func:`legacy_selector_labels`
    (its pods carry the component label anyway: :func:`labels` always set it)."""
    return {c.LABEL_NAME: c.APP_NAME, c.LABEL_INSTANCE: store, c.LABEL_COMPONENT: NODE_COMPONENT}


def legacy_selector_labels(store: str) -> dict[str, str]:
    """The selector of StatefulSets made by operators before the component label was added."""
    return {c.LABEL_NAME: c.APP_NAME, c.LABEL_INSTANCE: store}


def labels(store: str, component: str = NODE_COMPONENT) -> dict[str, str]:
    return {
        **selector_labels(store),
        c.LABEL_COMPONENT: component,
        c.LABEL_MANAGED_BY: c.MANAGER,
        c.LABEL_STORE: store,
    }


def pod_dns_name(store: str, ordinal: int, namespace: str, config: OperatorConfig) -> str:
    suffix = f"svc.{config.cluster_domain}" if config.cluster_domain else "svc"
    return f"{pod(store, ordinal)}.{headless_service(store)}.{namespace}.{suffix}"


def with_port(address: str, port: int) -> str:
    """``address`` (``host:port``, ``[v6]:port``) with another port on the same host."""
    return f"{address.rsplit(':', 1)[0]}:{port}"


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

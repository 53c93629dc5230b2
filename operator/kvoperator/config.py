"""The operator's own settings, read from ``KVSTORE_OPERATOR_*`` environment variables.

Every setting has a default that suits a real cluster; tests override a few (shorter intervals,
``pod-ip`` member addresses, a local backup directory). See docs/operator.md ("Settings").
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from kvnode.core.units import parse_duration
from kvoperator import __version__

PREFIX = "KVSTORE_OPERATOR_"


class AddressMode(StrEnum):
    """How the operator and the nodes address a member."""

    # <pod>.<headless-service>.<namespace>.svc:<port>: stable across pod restarts (the default).
    DNS = "dns"
    # <pod IP>:<port>: for clusters without per-pod DNS, and for tests whose "pods" are local
    # processes on loopback addresses. A pod that restarts with a new IP gets a new membership epoch.
    POD_IP = "pod-ip"


@dataclass(frozen=True)
class OperatorConfig:
    """Every setting of the operator; each field is read from ``KVSTORE_OPERATOR_<FIELD>``."""

    # Member addressing.
    address_mode: AddressMode = AddressMode.DNS
    cluster_domain: str = ""  # e.g. "cluster.local"; empty: names end in ".svc"
    # The node image when a KVStore names none.
    node_image: str = f"kvstore:{__version__}"
    # Where the node containers mount their volumes.
    data_path: str = "/var/lib/kvnode"
    # Both under one folder: the node's --backup-root, outside which it refuses backup locations.
    backup_path: str = "/backups/store"
    restore_path: str = "/backups/restore"
    # Serving.
    metrics_listen: str = "0.0.0.0:9090"  # empty: no metrics endpoint
    liveness: str = "http://0.0.0.0:8080/healthz"  # empty: no liveness endpoint
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    peering: str = ""  # a kopf peering name; empty: standalone
    # The operator's own namespace (the chart sets it): stores' NetworkPolicies let its pods in.
    # Empty: only operator pods in the store's own namespace.
    operator_namespace: str = ""
    # Leader election on a coordination.k8s.io Lease (leader.py): of several replicas, one acts.
    leader_election: bool = True
    leader_election_namespace: str = ""  # empty: the pod's own; outside a cluster: no election
    lease_name: str = "kvstore-operator"
    # Timing (seconds).
    reconcile_interval: float = 10.0
    admin_timeout: float = 5.0
    health_timeout: float = 2.0
    transfer_timeout: float = 3600.0
    backup_timeout: float = 1800.0
    unhealthy_pod_threshold: float = 120.0  # 0: never restart unhealthy pods
    stuck_terminating_grace: float = 300.0  # 0: never force-delete stuck pods
    watch_server_timeout: float = 300.0
    watch_client_timeout: float = 330.0
    connect_timeout: float = 30.0
    # client-go's defaults: the renew deadline is shorter than the lease, so a leader that cannot
    # renew stops before another may take over.
    lease_duration: float = 15.0
    lease_renew_deadline: float = 10.0
    lease_retry_period: float = 2.0

    @property
    def backup_root(self) -> str:
        """The node's ``--backup-root``: the folder that holds both backup mounts."""
        return os.path.commonpath([self.backup_path, self.restore_path])

    def __post_init__(self) -> None:
        if not self.lease_retry_period < self.lease_renew_deadline < self.lease_duration:
            raise ValueError("leases need retry period < renew deadline < lease duration")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read every setting from ``KVSTORE_OPERATOR_<NAME>``; raise ValueError on a bad value."""
        env = os.environ if environ is None else environ
        types = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = parse_setting(PREFIX + f.name.upper(), types[f.name], raw)
        return cls(**values)

    def with_overrides(self, **changes: Any) -> OperatorConfig:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(changes)
        return OperatorConfig(**data)


def _duration(raw: str) -> float:
    value = parse_duration(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parser(kind: Any) -> Callable[[str], Any]:
    """How a setting of type ``kind`` is read (TypeError for a type no setting should have)."""
    if kind is float:
        return _duration  # every float setting is a duration: "250ms", "10s", "5m" or seconds
    if kind is bool:
        return _bool
    if kind is str:
        return str.strip
    if kind == tuple[str, ...]:
        return _names
    if isinstance(kind, type) and issubclass(kind, StrEnum):
        return lambda raw: kind(raw.strip().lower())
    raise TypeError(f"a setting cannot have the type {kind!r}")


def parse_setting(env: str, kind: Any, raw: str) -> Any:
    """The value of the variable ``env`` for a setting of type ``kind``."""
    parse = _parser(kind)
    try:
        return parse(raw)
    except ValueError as exc:
        raise ValueError(f"{env}={raw!r}: {exc}") from None


def env_names() -> list[str]:
    """Every environment variable the operator reads (for docs and --help)."""
    return [PREFIX + f.name.upper() for f in fields(OperatorConfig)]

"""What the handlers and the steps share while the operator runs: settings, the API clients,
metrics and events. (The per-store reconcilers are registry.py's.)"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvoperator.config import OperatorConfig
from kvoperator.events import Events
from kvoperator.kube import KubeApi
from kvoperator.metrics import OperatorMetrics
from kvoperator.node_admin import NodeAdmin, NodeAdminApi


@dataclass
class OperatorContext:
    """The operator's settings and clients, made once at start-up."""

    config: OperatorConfig
    kube: KubeApi
    admin: NodeAdminApi
    metrics: OperatorMetrics
    events: Events = field(default_factory=Events)

    @classmethod
    def create(
        cls, config: OperatorConfig, kube: KubeApi, metrics: OperatorMetrics | None = None
    ) -> OperatorContext:
        admin = NodeAdmin(
            timeout=config.admin_timeout,
            health_timeout=config.health_timeout,
            transfer_timeout=config.transfer_timeout,
            backup_timeout=config.backup_timeout,
        )
        return cls(config=config, kube=kube, admin=admin, metrics=metrics or OperatorMetrics())

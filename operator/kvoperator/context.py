"""Everything the handlers share while the operator runs: settings, API clients, metrics, and
the per-store reconcilers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvoperator.config import OperatorConfig
from kvoperator.events import Events
from kvoperator.kube import KubeClient
from kvoperator.metrics import OperatorMetrics
from kvoperator.nodes import NodeAdmin

if TYPE_CHECKING:
    from kvoperator.reconciler import StoreReconciler


@dataclass
class OperatorContext:
    config: OperatorConfig
    kube: KubeClient
    admin: NodeAdmin
    metrics: OperatorMetrics
    events: Events = field(default_factory=Events)
    reconcilers: dict[tuple[str, str], StoreReconciler] = field(default_factory=dict)

    @classmethod
    def create(
        cls, config: OperatorConfig, kube: KubeClient, metrics: OperatorMetrics | None = None
    ) -> OperatorContext:
        admin = NodeAdmin(
            timeout=config.admin_timeout,
            health_timeout=config.health_timeout,
            transfer_timeout=config.transfer_timeout,
            backup_timeout=config.backup_timeout,
        )
        return cls(config=config, kube=kube, admin=admin, metrics=metrics or OperatorMetrics())

    def reconciler(self, namespace: str, name: str) -> StoreReconciler:
        from kvoperator.reconciler import StoreReconciler

        key = (namespace, name)
        if key not in self.reconcilers:
            self.reconcilers[key] = StoreReconciler(self, namespace, name)
        return self.reconcilers[key]

    def wake(self, namespace: str, name: str) -> None:
        """Ask a store's reconciler for a pass now (a no-op for stores it does not run)."""
        reconciler = self.reconcilers.get((namespace, name))
        if reconciler is not None:
            reconciler.wake()

"""The reconcilers of the stores this operator runs, one per KVStore, for the handlers to find."""

from __future__ import annotations

from collections.abc import Iterator

from kvoperator.context import OperatorContext
from kvoperator.reconciler import StoreReconciler


class StoreRegistry:
    """Maps (namespace, name) to the store's reconciler while its daemon runs."""

    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx
        self._reconcilers: dict[tuple[str, str], StoreReconciler] = {}

    def reconciler(self, namespace: str, name: str) -> StoreReconciler:
        """The store's reconciler, made on first use."""
        key = (namespace, name)
        if key not in self._reconcilers:
            self._reconcilers[key] = StoreReconciler(self.ctx, namespace, name)
        return self._reconcilers[key]

    def forget(self, namespace: str, name: str) -> StoreReconciler | None:
        return self._reconcilers.pop((namespace, name), None)

    def wake(self, namespace: str, name: str) -> None:
        """Ask a store's reconciler for a pass now (a no-op for stores it does not run)."""
        reconciler = self._reconcilers.get((namespace, name))
        if reconciler is not None:
            reconciler.wake()

    def __iter__(self) -> Iterator[StoreReconciler]:
        return iter(list(self._reconcilers.values()))

    def __len__(self) -> int:
        return len(self._reconcilers)

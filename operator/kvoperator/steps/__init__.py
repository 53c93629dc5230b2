"""The reconcile steps, in the order a pass runs them (see docs/operator.md, "Reconcile steps").

Each step brings one thing to its desired state and changes nothing when it already is there, so
running a step twice in a row writes nothing the second time.
"""

from __future__ import annotations

from kvoperator.reconciler import Step
from kvoperator.steps import (
    backups,
    config,
    membership,
    pdb,
    pod_health,
    restore,
    services,
    statefulset,
    status,
)

STEPS: list[Step] = [
    config.run,
    services.run,
    statefulset.run,
    pdb.run,
    membership.run,
    restore.run,
    backups.run,
    pod_health.run,
    status.run,
]

__all__ = ["STEPS"]

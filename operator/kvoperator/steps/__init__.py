"""The reconcile steps, in the order a pass runs them (see docs/operator.md, "Reconcile steps").

Each step brings one thing to its desired state and changes nothing when it already is there, so
running a step twice in a row writes nothing the second time. Steps never import each other: what
several need is in the observation (observation.py) or in pure planning modules (plan.py,
restore_source.py), and what they share at run time is the pass (passes.py).
"""

from __future__ import annotations

from kvoperator.passes import Step
from kvoperator.steps import (
    backups,
    config,
    membership,
    network_policy,
    pdb,
    pod_health,
    restore,
    services,
    statefulset,
    status,
    tls,
)

STEPS: tuple[Step, ...] = (
    Step("config", config.run),
    Step("tls", tls.run),  # before the StatefulSet: its pods mount the node certificate
    Step("services", services.run),
    Step("network_policy", network_policy.run),
    Step("statefulset", statefulset.run),
    Step("pdb", pdb.run),
    Step("membership", membership.run),
    Step("restore", restore.run),
    Step("backups", backups.run),
    Step("pod_health", pod_health.run),
    Step("status", status.run),  # last: it writes what the others found and remember
)

__all__ = ["STEPS"]

"""A store's status (phase, conditions, members) from an observation and a pass's report.

Pure functions: the status step only patches what these return, and only when it changed.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from kvnode.core.levels import quorum
from kvnode.core.membership import MemberState
from kvoperator import names
from kvoperator.config import OperatorConfig
from kvoperator.observation import Observed
from kvoperator.plan import member_ordinals
from kvoperator.report import Report
from kvoperator.timestamps import format_time

AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONDITION_TYPES = (AVAILABLE, PROGRESSING, DEGRADED)
STATE_NAMES = {MemberState.ACTIVE: "Active", MemberState.JOINING: "Joining", MemberState.LEAVING: "Leaving"}


def condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}


def unreachable_message(observed: Observed) -> str:
    """Why a store that had a membership is down: which pods were probed, and what was kept."""
    tried = sorted(observed.probes)
    untried = len(observed.pods) - len(tried)
    errors = [f"{name}: {probe.error}" for name, probe in sorted(observed.probes.items()) if probe.error]
    return (
        f"no node answers: probed {len(tried)} of {len(observed.pods)} pods"
        + (f" ({', '.join(tried)})" if tried else "")
        + (f"; {untried} not probed (no IP, or terminating)" if untried else "")
        + (f"; first error {errors[0]}" if errors else "")
        + f"; membershipEpoch {observed.recorded_epoch} and members are as last reported"
    )


def availability(observed: Observed, report: Report, config: OperatorConfig) -> dict[str, Any]:
    spec = observed.spec
    membership = observed.membership
    if spec is None:
        return condition(AVAILABLE, False, "InvalidSpec", observed.spec_error)
    if observed.unreachable:
        return condition(AVAILABLE, False, "NoMemberReachable", unreachable_message(observed))
    if membership is None:
        return condition(AVAILABLE, False, "NoNodeAnswers", "no node of the store answers yet")
    if membership.epoch == 0:
        return condition(AVAILABLE, False, "Bootstrapping", "the membership has no epoch yet")
    if report.restore_pending:
        return condition(AVAILABLE, False, "Restoring", "the store is being restored from a backup")
    serving = observed.serving_addresses(config)
    ordinals = member_ordinals(observed.name, membership)
    readers = [m.id for m in membership.members if m.state != MemberState.JOINING]
    down = sorted(m for m in readers if ordinals.get(m, -1) not in serving)
    tolerated = membership.replication_factor - quorum(membership.replication_factor)
    if len(down) > tolerated:
        return condition(
            AVAILABLE,
            False,
            "QuorumAtRisk",
            f"{len(down)} members are not serving ({', '.join(down)}); with replication factor "
            f"{membership.replication_factor} a partition tolerates {tolerated}",
        )
    return condition(
        AVAILABLE, True, "QuorumAvailable", f"{len(readers) - len(down)} of {len(readers)} members serve"
    )


def members_status(observed: Observed, config: OperatorConfig) -> list[dict[str, Any]]:
    """The members the nodes hold; when none answers (``observed.unreachable``), the members the
    status last recorded, so that a store that is down does not look empty. Either way ``ready``,
    ``rebuilding`` and ``podPhase`` are what this pass observed. With an invalid spec the nodes
    are not asked, and the recorded members stay as they were."""
    if observed.spec is None:
        return [dict(m) for m in observed.recorded_members]
    serving = observed.serving_addresses(config)
    if observed.membership is not None:
        known = [(m.id, m.address, STATE_NAMES[m.state]) for m in observed.membership.members]
    elif observed.unreachable:
        known = [
            (str(m["name"]), str(m.get("address", "")), str(m.get("state", "")))
            for m in observed.recorded_members
        ]
    else:
        return []
    result = []
    for member_id, address, state in known:
        ordinal = names.ordinal_of(observed.name, member_id)
        pod = observed.pods.get(ordinal) if ordinal is not None else None
        probe = observed.probes.get(member_id)
        result.append(
            {
                "name": member_id,
                "address": address,
                "state": state,
                "ready": ordinal in serving,
                "rebuilding": bool(probe and probe.rebuilding),
                "podPhase": str((pod.body.get("status") or {}).get("phase", "Missing")) if pod else "Missing",
            }
        )
    return result


def phase(observed: Observed, report: Report, available: bool) -> str:
    if observed.store.get("metadata", {}).get("deletionTimestamp"):
        return "Deleting"
    if observed.spec is None:
        return "Invalid"
    if observed.unreachable:
        return "Degraded"  # it had a membership: not a store being created
    if observed.membership is None or observed.membership.epoch == 0:
        return "Creating"
    if report.restore_pending:
        return "Restoring"
    if any(reason in ("ScalingUp", "ScalingDown") for reason, _ in report.progressing):
        return "Scaling"
    if report.degraded or not available:
        return "Degraded"
    return "Running"


def merge_conditions(
    previous: Sequence[Mapping[str, Any]],
    current: list[dict[str, Any]],
    now: datetime.datetime,
    generation: int,
) -> list[dict[str, Any]]:
    """Keep each condition's lastTransitionTime unless its status changed."""
    before = {c.get("type"): c for c in previous}
    merged = []
    for cond in current:
        old = before.get(cond["type"])
        changed = old is None or old.get("status") != cond["status"]
        stamp = (
            format_time(now) if changed or old is None else old.get("lastTransitionTime", format_time(now))
        )
        merged.append({**cond, "lastTransitionTime": stamp, "observedGeneration": generation})
    return merged


def compute_status(
    observed: Observed, report: Report, config: OperatorConfig, now: datetime.datetime
) -> dict[str, Any]:
    """The status fields the reconcile pass owns (backup and restore fields are written elsewhere)."""
    available = availability(observed, report, config)
    progressing = (
        condition(PROGRESSING, True, *report.progressing[0])
        if report.progressing
        else condition(PROGRESSING, False, "Reconciled", "the store matches its spec")
    )
    if observed.unreachable:  # the worst problem there is: first, whatever the steps found
        degraded = condition(DEGRADED, True, "NoMemberReachable", unreachable_message(observed))
    elif report.degraded:
        degraded = condition(DEGRADED, True, *report.degraded[0])
    else:
        degraded = condition(DEGRADED, False, "Healthy", "every member serves")
    generation = int(observed.store.get("metadata", {}).get("generation") or 0)
    previous = list(observed.status.get("conditions") or [])
    membership = observed.membership
    return {
        "phase": phase(observed, report, available["status"] == "True"),
        "observedGeneration": generation,
        "replicas": observed.statefulset_replicas or 0,
        "readyReplicas": sum(1 for p in observed.pods.values() if p.ready),
        # No node answers: keep the last epoch known rather than report 0 (a store being created).
        "membershipEpoch": membership.epoch if membership else observed.recorded_epoch,
        "members": members_status(observed, config),
        "operation": report.operation,
        "conditions": merge_conditions(previous, [available, progressing, degraded], now, generation),
    }


def status_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Does ``new`` differ from ``old`` in anything but the time stamps it would keep anyway?"""
    for key, value in new.items():
        if key == "conditions":
            strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in value]
            have = [
                {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in old.get("conditions") or []
            ]
            if strip != have:
                return True
        elif old.get(key) != value:
            return True
    return False

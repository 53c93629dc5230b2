"""Status and conditions from an observation and a pass's report."""

from __future__ import annotations

import datetime
from typing import Any

from kvoperator.conditions import compute_status, merge_conditions, status_changed
from kvoperator.config import AddressMode, OperatorConfig
from kvoperator.node_admin import Health, NodeHealth
from kvoperator.observation import Observed
from kvoperator.pods import PodView
from kvoperator.report import Report
from kvoperator.spec import parse_store_spec

from kvnode.api.v1 import admin_pb2
from kvnode.core.membership import Member, Membership, MemberState

CONFIG = OperatorConfig(address_mode=AddressMode.POD_IP)
NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


def pod(i: int, ready: bool = True) -> PodView:
    body = {
        "metadata": {"name": f"kv-{i}", "uid": f"u{i}"},
        "status": {
            "phase": "Running",
            "podIP": f"10.0.0.{i}",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "kvnode", "state": {"running": {}}}],
        },
    }
    return PodView(f"kv-{i}", i, body)


def observed(
    ready: tuple[int, ...] = (0, 1, 2), epoch: int = 1, rebuilding: tuple[int, ...] = ()
) -> Observed:
    store: dict[str, Any] = {
        "metadata": {"name": "kv", "namespace": "ns", "uid": "s", "generation": 4},
        "spec": {"replicas": 3},
        "status": {},
    }
    obs = Observed(store=store, spec=parse_store_spec({"replicas": 3, "port": 7000}))
    obs.statefulset = {"spec": {"replicas": 3}}
    obs.pods = {i: pod(i, ready=i in ready) for i in range(3)}
    for i in range(3):
        serving = i in ready and i not in rebuilding
        obs.probes[f"kv-{i}"] = NodeHealth(
            Health.SERVING if serving else Health.NOT_SERVING,
            admin_pb2.StatusResponse(rebuilding=i in rebuilding) if i in ready else None,
        )
    obs.membership = Membership(
        epoch, tuple(Member(f"kv-{i}", f"10.0.0.{i}:7000", MemberState.ACTIVE) for i in range(3)), 3, 64
    )
    return obs


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_a_healthy_store_is_available_reconciled_and_not_degraded() -> None:
    status = compute_status(observed(), Report(), CONFIG, NOW)
    assert status["phase"] == "Running" and status["readyReplicas"] == 3 and status["membershipEpoch"] == 1
    assert conditions(status) == {
        "Available": ("True", "QuorumAvailable"),
        "Progressing": ("False", "Reconciled"),
        "Degraded": ("False", "Healthy"),
    }
    assert [m["state"] for m in status["members"]] == ["Active"] * 3
    assert status["observedGeneration"] == 4


def test_one_member_down_keeps_quorum_two_lose_it() -> None:
    report = Report()
    report.degrade("MembersNotReady", "kv-2")
    one = compute_status(observed(ready=(0, 1)), report, CONFIG, NOW)
    assert conditions(one)["Available"] == ("True", "QuorumAvailable")
    assert conditions(one)["Degraded"] == ("True", "MembersNotReady") and one["phase"] == "Degraded"
    two = compute_status(observed(ready=(0,)), report, CONFIG, NOW)
    assert conditions(two)["Available"] == ("False", "QuorumAtRisk")


def test_phases() -> None:
    assert compute_status(observed(epoch=0), Report(), CONFIG, NOW)["phase"] == "Creating"
    scaling = Report()
    scaling.progress("ScalingUp", "adding kv-3")
    status = compute_status(observed(), scaling, CONFIG, NOW)
    assert status["phase"] == "Scaling" and conditions(status)["Progressing"] == ("True", "ScalingUp")
    restoring = Report(restore_pending=True)
    status = compute_status(observed(), restoring, CONFIG, NOW)
    assert status["phase"] == "Restoring" and conditions(status)["Available"] == ("False", "Restoring")
    refused = Report()
    refused.degrade("ScaleDownRefused", "spec.replicas=2 is below replicationFactor=3")
    assert conditions(compute_status(observed(), refused, CONFIG, NOW))["Degraded"] == (
        "True",
        "ScaleDownRefused",
    )


def test_a_rebuilding_member_is_reported() -> None:
    status = compute_status(observed(rebuilding=(1,)), Report(), CONFIG, NOW)
    member = status["members"][1]
    assert member["rebuilding"] is True and member["ready"] is False


def unreachable(previous: dict[str, Any], pending: bool = False) -> Observed:
    """The store of ``observed()`` after every node stopped answering: pods not Ready and probes
    that time out, or (``pending``) pods without an IP that nothing could probe."""
    obs = observed(ready=())
    obs.store["status"] = previous
    obs.membership = None
    if pending:
        for i in range(3):
            obs.pods[i] = PodView(
                f"kv-{i}", i, {"metadata": {"name": f"kv-{i}"}, "status": {"phase": "Pending"}}
            )
        obs.probes = {}
    else:
        obs.probes = {
            f"kv-{i}": NodeHealth(Health.UNREACHABLE, error="DEADLINE_EXCEEDED: Deadline Exceeded")
            for i in range(3)
        }
    return obs


def test_a_store_whose_nodes_all_stop_answering_keeps_its_membership_and_is_degraded() -> None:
    before = compute_status(observed(epoch=5), Report(), CONFIG, NOW)
    report = Report()
    report.degrade("MemberUnhealthy", "kv-0 fails health checks for 2s")  # what pod_health reports
    status = compute_status(unreachable(before), report, CONFIG, NOW)
    assert status["phase"] == "Degraded"  # not "Creating": the store had a membership
    assert status["membershipEpoch"] == 5
    assert [(m["name"], m["state"], m["ready"]) for m in status["members"]] == [
        (f"kv-{i}", "Active", False) for i in range(3)
    ]
    assert conditions(status)["Available"] == ("False", "NoMemberReachable")
    assert conditions(status)["Degraded"] == ("True", "NoMemberReachable")
    message = next(c["message"] for c in status["conditions"] if c["type"] == "Degraded")
    assert "probed 3 of 3 pods (kv-0, kv-1, kv-2)" in message and "DEADLINE_EXCEEDED" in message
    assert "membershipEpoch 5" in message
    # Pods Pending without an IP: nothing to probe, and the message says so.
    pending = compute_status(unreachable(before, pending=True), Report(), CONFIG, NOW)
    assert pending["phase"] == "Degraded" and pending["membershipEpoch"] == 5
    assert [m["podPhase"] for m in pending["members"]] == ["Pending"] * 3
    message = next(c["message"] for c in pending["conditions"] if c["type"] == "Available")
    assert "probed 0 of 3 pods; 3 not probed" in message
    # Recomputed from its own status, it stays the same (no patch every pass).
    assert not status_changed(status, compute_status(unreachable(status), report, CONFIG, NOW))


def test_a_new_store_that_no_node_answers_yet_is_creating() -> None:
    status = compute_status(unreachable({}), Report(), CONFIG, NOW)
    assert status["phase"] == "Creating" and status["membershipEpoch"] == 0 and status["members"] == []
    assert conditions(status)["Available"] == ("False", "NoNodeAnswers")


def test_transition_times_move_only_when_a_status_flips() -> None:
    before = [{"type": "Available", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}]
    same = merge_conditions(before, [{"type": "Available", "status": "True"}], NOW, 1)
    assert same[0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    flipped = merge_conditions(before, [{"type": "Available", "status": "False"}], NOW, 1)
    assert flipped[0]["lastTransitionTime"] == "2025-01-01T00:00:00Z"


def test_status_changed_ignores_only_time_stamps() -> None:
    status = compute_status(observed(), Report(), CONFIG, NOW)
    later = compute_status(observed(), Report(), CONFIG, NOW + datetime.timedelta(hours=1))
    assert not status_changed(status, later)
    assert status_changed(status, {**later, "readyReplicas": 2})

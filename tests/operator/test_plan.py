"""The membership and replica decisions, as pure functions."""

from __future__ import annotations

from kvoperator import plan

from kvnode.core.membership import Member, Membership, MemberState

A = MemberState.ACTIVE
J = MemberState.JOINING
L = MemberState.LEAVING


def ms(*members: tuple[int, MemberState], epoch: int = 3, rf: int = 3) -> Membership:
    return Membership(epoch, tuple(Member(f"kv-{i}", f"10.0.0.{i}:7000", s) for i, s in members), rf, 64)


def serving(*ordinals: int) -> dict[int, str]:
    return {i: f"10.0.0.{i}:7000" for i in ordinals}


def test_bootstrap_waits_for_every_initial_member_then_takes_epoch_one() -> None:
    initial = ms((0, A), (1, A), (2, A), epoch=0)
    waiting = plan.plan_membership("kv", 3, 3, initial, serving(0, 1)).action
    assert isinstance(waiting, plan.Wait) and "kv-2" in waiting.message
    action = plan.plan_membership("kv", 3, 3, initial, serving(0, 1, 2)).action
    assert isinstance(action, plan.Bootstrap)
    assert action.membership.epoch == 1 and [m.id for m in action.membership.members] == [
        "kv-0",
        "kv-1",
        "kv-2",
    ]


def test_a_half_done_change_is_finished_first() -> None:
    assert plan.plan_membership(
        "kv", 5, 3, ms((0, A), (1, A), (2, A), (3, J)), serving(0, 1, 2, 3)
    ).action == (plan.AddMember("kv-3", "10.0.0.3:7000"))
    # Even when the spec now asks for fewer: the join completes, then the scale-down runs.
    assert plan.plan_membership(
        "kv", 3, 3, ms((0, A), (1, A), (2, A), (3, L)), serving(0, 1, 2, 3)
    ).action == (plan.RemoveMember("kv-3"))


def test_scale_up_adds_the_lowest_missing_ordinal_once_its_pod_serves() -> None:
    current = ms((0, A), (1, A), (2, A))
    waiting = plan.plan_membership("kv", 5, 3, current, serving(0, 1, 2, 4)).action
    assert isinstance(waiting, plan.Wait) and "kv-3" in waiting.message
    assert plan.plan_membership("kv", 5, 3, current, serving(0, 1, 2, 3)).action == plan.AddMember(
        "kv-3", "10.0.0.3:7000"
    )
    blocked = plan.plan_membership("kv", 5, 3, current, serving(0, 2, 3)).action
    assert isinstance(blocked, plan.Wait) and "kv-1" in blocked.message


def test_scale_down_removes_the_highest_ordinal_first_while_the_rest_serve() -> None:
    current = ms((0, A), (1, A), (2, A), (3, A), (4, A))
    assert plan.plan_membership("kv", 3, 3, current, serving(0, 1, 2, 3, 4)).action == plan.RemoveMember(
        "kv-4"
    )
    waiting = plan.plan_membership("kv", 3, 3, current, serving(0, 2, 3, 4)).action
    assert isinstance(waiting, plan.Wait) and "kv-1" in waiting.message


def test_going_below_the_replication_factor_is_refused() -> None:
    current = ms((0, A), (1, A), (2, A))
    decision = plan.plan_membership("kv", 2, 3, current, serving(0, 1, 2))
    assert decision.action is None
    assert "below replicationFactor=3" in decision.refusal
    assert plan.statefulset_replicas("kv", 2, 3, current, 3) == 3


def test_the_statefulset_shrinks_only_below_pods_that_are_no_members() -> None:
    five = ms((0, A), (1, A), (2, A), (3, A), (4, A))
    assert plan.statefulset_replicas("kv", 3, 3, five, 5) == 5
    assert plan.statefulset_replicas("kv", 3, 3, ms((0, A), (1, A), (2, A), (3, A), (4, L)), 5) == 5
    assert plan.statefulset_replicas("kv", 3, 3, ms((0, A), (1, A), (2, A), (3, A)), 5) == 4
    assert plan.statefulset_replicas("kv", 3, 3, ms((0, A), (1, A), (2, A)), 4) == 3
    # Growing happens at once; before bootstrap nothing is resized.
    assert plan.statefulset_replicas("kv", 5, 3, ms((0, A), (1, A), (2, A)), 3) == 5
    assert plan.statefulset_replicas("kv", 5, 3, ms((0, A), (1, A), (2, A), epoch=0), 3) == 3
    assert plan.statefulset_replicas("kv", 5, 3, None, None) == 5


def test_a_member_at_a_new_pod_ip_gets_a_new_epoch() -> None:
    current = ms((0, A), (1, A), (2, A))
    moved = {0: "10.0.0.0:7000", 1: "10.9.9.9:7000", 2: "10.0.0.2:7000"}
    action = plan.plan_membership("kv", 3, 3, current, moved).action
    assert isinstance(action, plan.UpdateAddresses)
    assert action.membership.epoch == 4 and action.membership.member("kv-1") == Member(
        "kv-1", "10.9.9.9:7000"
    )


def test_nothing_to_do_when_the_membership_matches() -> None:
    assert plan.plan_membership("kv", 3, 3, ms((0, A), (1, A), (2, A)), serving(0, 1, 2)).action is None
    assert isinstance(plan.plan_membership("kv", 3, 3, None, {}).action, plan.Wait)

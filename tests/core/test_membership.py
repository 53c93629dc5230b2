"""Memberships: the configurations they refuse, their views during a transition, and their wire
form."""

from __future__ import annotations

import pytest

from kvnode.core.membership import Member, Membership, MemberState


def test_membership_rejects_bad_configurations() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Membership(1, (Member("a", "x:1"), Member("a", "y:1")), 3, 16)
    with pytest.raises(ValueError, match="ACTIVE"):
        Membership(1, (Member("a", "x:1", MemberState.JOINING),), 3, 16)
    with pytest.raises(ValueError, match="partitions"):
        Membership(1, (Member("a", "x:1"),), 3, 0)
    with pytest.raises(ValueError, match="invalid node id"):
        Membership(1, (Member("-a", "x:1"),), 3, 16)


def test_reads_leave_out_joiners_and_writes_leave_out_leavers() -> None:
    m = Membership(
        3,
        (
            Member("a", "x:1"),
            Member("b", "x:2", MemberState.JOINING),
            Member("c", "x:3", MemberState.LEAVING),
        ),
        3,
        16,
    )
    assert m.old_view == ("a", "c") and m.new_view == ("a", "b")
    assert m.in_transition
    assert m.address_of("b") == "x:2" and m.member("z") is None


def test_membership_round_trips_through_protobuf() -> None:
    m = Membership(
        4, (Member("a", "h:1"), Member("b", "h:2", MemberState.LEAVING), Member("c", "h:3")), 2, 64
    )
    assert Membership.from_proto(m.to_proto()) == m

"""The upgrade from single-port members: once a member's pod serves a peer port, a new epoch names
it, and not before (a member's node keeps serving peers on its client port until then)."""

from __future__ import annotations

from kvoperator.plan import AddMember, Bootstrap, UpdateAddresses, plan_membership

from kvnode.core.membership import Member, Membership, MemberState

SERVING = {i: f"10.0.0.{i + 1}:7000" for i in range(3)}
PEERS = {i: f"10.0.0.{i + 1}:7001" for i in range(3)}


def legacy(epoch: int = 4) -> Membership:
    return Membership(epoch, tuple(Member(f"kv-{i}", SERVING[i]) for i in range(3)), 3, 16)


def test_members_get_their_peer_port_in_one_new_epoch() -> None:
    action = plan_membership("kv", 3, 3, legacy(), SERVING, PEERS).action
    assert isinstance(action, UpdateAddresses)
    assert action.membership.epoch == 5
    assert [(m.address, m.peer_address) for m in action.membership.members] == [
        (SERVING[i], PEERS[i]) for i in range(3)
    ]


def test_mid_rollout_no_record_changes() -> None:
    """kv-2 restarted with the peer port, kv-0 and kv-1 not yet: their nodes may know no peer
    ports and still dial kv-2's client port for Replica, which it serves while its record names
    none."""
    assert plan_membership("kv", 3, 3, legacy(), SERVING, {2: PEERS[2]}).action is None


def test_a_rollback_drops_the_peer_ports_in_one_epoch() -> None:
    members = tuple(Member(f"kv-{i}", SERVING[i], MemberState.ACTIVE, PEERS[i]) for i in range(3))
    upgraded = Membership(5, members, 3, 16)
    assert plan_membership("kv", 3, 3, upgraded, SERVING, {0: PEERS[0]}).action is None  # rolling back
    action = plan_membership("kv", 3, 3, upgraded, SERVING, {}).action
    assert isinstance(action, UpdateAddresses)
    assert [m.peer_address for m in action.membership.members] == ["", "", ""]


def test_new_members_and_a_new_cluster_start_with_their_peer_ports() -> None:
    seed = Membership(0, tuple(Member(f"kv-{i}", SERVING[i]) for i in range(3)), 3, 16)
    boot = plan_membership("kv", 3, 3, seed, SERVING, PEERS).action
    assert isinstance(boot, Bootstrap)
    assert [m.peer_address for m in boot.membership.members] == [PEERS[i] for i in range(3)]
    members = tuple(Member(f"kv-{i}", SERVING[i], MemberState.ACTIVE, PEERS[i]) for i in range(3))
    serving = {**SERVING, 3: "10.0.0.4:7000"}
    grow = plan_membership("kv", 4, 3, Membership(2, members, 3, 16), serving, {**PEERS, 3: "10.0.0.4:7001"})
    assert grow.action == AddMember("kv-3", "10.0.0.4:7000", "10.0.0.4:7001")

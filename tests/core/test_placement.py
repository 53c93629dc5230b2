"""Placement: partitions by key hash, replica sets by rendezvous hashing, and the old and new sets
of a transition."""

from __future__ import annotations

from collections import Counter

from kvnode.core.membership import Member, Membership, MemberState
from kvnode.core.placement import Placement, partition_of


def membership(ids: list[str], rf: int = 3, partitions: int = 1024, **states: MemberState) -> Membership:
    members = tuple(Member(i, f"{i}:7000", states.get(i.replace("-", "_"), MemberState.ACTIVE)) for i in ids)
    return Membership(1, members, rf, partitions)


def test_partition_is_stable_and_in_range() -> None:
    assert partition_of(b"hello", 1024) == partition_of(b"hello", 1024)
    assert all(0 <= partition_of(f"k{i}".encode(), 64) < 64 for i in range(1000))


def test_each_partition_has_rf_distinct_replicas_spread_evenly() -> None:
    placement = Placement(membership([f"kv-{i}" for i in range(5)]))
    load: Counter[str] = Counter()
    for p in range(1024):
        replicas = placement.read_replicas(p)
        assert len(set(replicas)) == 3
        load.update(replicas)
    # 1024 * 3 / 5 = 614 on average; rendezvous hashing keeps every node near it
    assert all(500 < n < 730 for n in load.values()), load


def test_replicas_are_capped_by_the_member_count() -> None:
    placement = Placement(membership(["solo"]))
    assert placement.read_replicas(7) == ("solo",)


def test_only_a_single_node_store_has_a_sole_replica() -> None:
    assert Placement(membership(["solo"])).sole_replica == "solo"
    assert Placement(membership([f"kv-{i}" for i in range(3)], rf=1)).sole_replica is None
    assert Placement(membership([f"kv-{i}" for i in range(3)])).sole_replica is None


def test_adding_a_member_moves_about_rf_over_n_of_the_replica_slots() -> None:
    before = Placement(membership([f"kv-{i}" for i in range(4)]))
    after = Placement(membership([f"kv-{i}" for i in range(5)]))
    moved = sum(len(set(before.read_replicas(p)) - set(after.read_replicas(p))) for p in range(1024))
    # each partition's replica set changes by at most one member; expected share 3/5 of partitions
    assert all(len(set(before.read_replicas(p)) - set(after.read_replicas(p))) <= 1 for p in range(1024))
    assert 0.45 * 1024 < moved < 0.75 * 1024


def test_transitions_read_the_old_view_and_write_both() -> None:
    ids = [f"kv-{i}" for i in range(4)]
    placement = Placement(membership(ids, kv_3=MemberState.JOINING))
    gained = placement.gained("kv-3")
    assert gained
    for p in gained:
        old, new = placement.write_sets(p)
        assert "kv-3" not in old and "kv-3" in new
        assert placement.read_replicas(p) == old
    assert not placement.lost("kv-3")


def test_leaving_member_loses_partitions_to_the_others() -> None:
    placement = Placement(membership([f"kv-{i}" for i in range(4)], kv_0=MemberState.LEAVING))
    assert placement.lost("kv-0")
    assert all("kv-0" not in placement.write_sets(p)[1] for p in range(1024))

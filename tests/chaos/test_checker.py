"""Lost writes, read-your-writes and convergence on hand-made histories, good and bad."""

from __future__ import annotations

from pathlib import Path

from e2e.chaos import checker
from e2e.chaos.history import History
from kvnode.core.membership import Member, Membership
from kvnode.core.placement import Placement
from tests.chaos.builders import d, history, r, w


def lost(h: History) -> checker.LostWrites:
    return checker.check_lost_writes(h)


# -- lost writes ----------------------------------------------------------------------------------


def test_final_value_is_the_last_acknowledged_write() -> None:
    result = lost(history(w("a", 0, 1), w("b", 2, 3), final={"k": "b"}))
    assert result.violations == [] and result.lost == [] and result.keys_checked == 1


def test_final_value_from_a_write_concurrent_with_the_last_acknowledged_one() -> None:
    assert lost(history(w("a", 0, 5), w("b", 1, 3), final={"k": "a"})).violations == []


def test_older_final_value_means_a_lost_write() -> None:
    h = history(w("a", 0, 1), w("b", 2, 3), final={"k": "a"})
    result = lost(h)
    assert len(result.violations) == 1
    assert [op.value for op in result.lost] == ["b"]
    assert "lost" in result.violations[0].describe()


def test_later_indeterminate_write_may_win() -> None:
    assert lost(history(w("a", 0, 1), w("b", 2, 3, "info"), final={"k": "b"})).violations == []


def test_earlier_indeterminate_write_may_win_over_a_concurrent_acknowledged_one() -> None:
    # The indeterminate write never completed: it is concurrent with everything after it began.
    assert lost(history(w("x", 0, 0.5, "info"), w("a", 1, 2), final={"k": "x"})).violations == []


def test_indeterminate_write_that_did_not_happen() -> None:
    assert lost(history(w("a", 0, 1), w("b", 2, 3, "info"), final={"k": "a"})).violations == []


def test_failed_write_must_not_be_final() -> None:
    result = lost(history(w("a", 0, 1), w("b", 2, 3, "fail"), final={"k": "b"}))
    assert len(result.violations) == 1
    assert "not written by any acknowledged" in result.violations[0].message


def test_deletes_are_writes_of_absent() -> None:
    assert lost(history(w("a", 0, 1), d(2, 3), final={"k": None})).violations == []
    assert lost(history(w("a", 0, 1), d(2, 3, "info"), final={"k": None})).violations == []
    result = lost(history(w("a", 0, 1), d(2, 3), w("b", 4, 5), final={"k": None}))
    assert [op.value for op in result.lost] == ["b"]


def test_absent_without_any_delete_after_an_acknowledged_write_is_a_lost_write() -> None:
    result = lost(history(w("a", 0, 1), final={"k": None}))
    assert [op.value for op in result.lost] == ["a"]


def test_absent_is_fine_when_nothing_was_acknowledged() -> None:
    assert lost(history(w("a", 0, 1, "info"), w("b", 0, 1, "fail"), final={"k": None})).violations == []


def test_missing_final_value_is_reported() -> None:
    result = lost(history(w("a", 0, 1), final={}))
    assert "no final value" in result.violations[0].message


def test_reads_only_keys_are_not_checked() -> None:
    assert lost(history(r(None, 0, 1), final={})).keys_checked == 0


# -- read your writes -----------------------------------------------------------------------------


def test_read_your_writes_holds() -> None:
    h = history(
        w("a", 0, 1, level="QUORUM", version=(10, "kv-0")),
        r("a", 2, 3, level="QUORUM", version=(10, "kv-0")),
        r("z", 4, 5, level="QUORUM", version=(12, "kv-1")),
        w("z", 3.5, 3.9, level="QUORUM", version=(12, "kv-1"), session=1),
    )
    assert checker.check_read_your_writes(h) == []


def test_stale_read_of_own_write_is_a_violation() -> None:
    h = history(
        w("a", 0, 1, level="QUORUM", version=(5, "kv-1"), session=1),
        w("b", 2, 3, level="QUORUM", version=(10, "kv-0")),
        r("a", 4, 5, level="QUORUM", version=(5, "kv-1")),
    )
    (violation,) = checker.check_read_your_writes(h)
    assert violation.check == "read-your-writes" and len(violation.ops) == 2


def test_reading_absent_after_own_write_needs_a_delete() -> None:
    mine = w("a", 0, 1, level="QUORUM", version=(10, "kv-0"))
    read_absent = r(None, 4, 5, level="QUORUM")
    assert len(checker.check_read_your_writes(history(mine, read_absent))) == 1
    theirs = d(2, 3, "info", level="QUORUM", session=1)
    assert checker.check_read_your_writes(history(mine, theirs, read_absent)) == []
    older = d(2, 3, level="QUORUM", session=1, version=(9, "kv-1"))
    assert len(checker.check_read_your_writes(history(mine, older, read_absent))) == 1


def test_own_delete_then_absent_is_fine() -> None:
    h = history(d(0, 1, level="QUORUM", version=(10, "kv-0")), r(None, 2, 3, level="QUORUM"))
    assert checker.check_read_your_writes(h) == []


def test_sessions_at_one_are_not_held_to_read_your_writes() -> None:
    h = history(
        w("a", 0, 1, level="ONE", version=(10, "kv-0")),
        r(None, 2, 3, level="ONE"),
    )
    assert checker.check_read_your_writes(h) == []


# -- convergence ----------------------------------------------------------------------------------


def placement(nodes: int = 4, rf: int = 2, partitions: int = 8) -> Placement:
    members = tuple(Member(f"kv-{i}", f"127.0.0.1:{7000 + i}") for i in range(nodes))
    return Placement(Membership(1, members, rf, partitions))


def digests_for(pl: Placement) -> dict[str, dict[int, tuple[bytes, int]]]:
    out: dict[str, dict[int, tuple[bytes, int]]] = {f"kv-{i}": {} for i in range(4)}
    for p in range(pl.partitions):
        for node in pl.read_replicas(p):
            out[node][p] = (bytes([p]) * 8, p)
    return out


def test_converged_replicas() -> None:
    pl = placement()
    assert checker.check_convergence(digests_for(pl), pl) == []


def test_differing_replica_is_reported() -> None:
    pl = placement()
    digests = digests_for(pl)
    node = pl.read_replicas(3)[1]
    digests[node][3] = (b"\xff" * 8, 99)
    (violation,) = checker.check_convergence(digests, pl)
    assert violation.key == "partition 3" and node in violation.message


def test_leftover_data_on_a_non_replica_is_ignored() -> None:
    pl = placement()
    digests = digests_for(pl)
    outsider = next(n for n in digests if n not in pl.read_replicas(5))
    digests[outsider][5] = (b"\x01" * 8, 1)
    assert checker.check_convergence(digests, pl) == []


def test_a_node_without_digests_is_reported() -> None:
    pl = placement()
    digests = digests_for(pl)
    del digests["kv-2"]
    assert any(v.key == "nodes" for v in checker.check_convergence(digests, pl))


# -- the whole thing, and saved histories ---------------------------------------------------------


def test_check_history_combines_the_checks(tmp_path: Path) -> None:
    h = history(
        w("a", 0, 1, key="lin", level="LINEARIZABLE", version=(1, "kv-0")),
        r("a", 2, 3, key="lin", level="LINEARIZABLE", version=(1, "kv-0")),
        w("b", 0, 1, key="lww", level="QUORUM", version=(1, "kv-0")),
        w("c", 2, 3, key="lww", level="QUORUM", version=(2, "kv-0")),
        final={"lin": "a", "lww": "b"},
    )
    result = checker.check_history(h)
    assert not result.ok
    assert [v.check for v in result.violations] == ["lost-writes"]
    assert result.linearizability_verdict == "ok"
    assert result.counts["ok"] == 4
    # A saved history gives the same verdict when loaded again.
    again = History.load(h.save(tmp_path / "history.json"))
    assert [v.message for v in checker.check_history(again).violations] == [
        v.message for v in result.violations
    ]

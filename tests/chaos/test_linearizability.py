"""The linearizability checker on hand-made single-register histories, good and bad."""

from __future__ import annotations

import time

from e2e.chaos import linearizability
from e2e.chaos.history import Op
from tests.chaos.builders import d, r, w


def verdict(*ops: Op, **kw: object) -> str:
    return linearizability.check(list(ops), **kw).verdict  # type: ignore[arg-type]


def test_sequential_history_is_linearizable() -> None:
    assert verdict(r(None, 0, 1), w("a", 2, 3), r("a", 4, 5), w("b", 6, 7), r("b", 8, 9)) == "ok"


def test_empty_history_is_linearizable() -> None:
    assert verdict() == "ok"


def test_stale_read_after_a_newer_completed_write_is_a_violation() -> None:
    result = linearizability.check([w("a", 0, 1), w("b", 2, 3), r("a", 4, 5)])
    assert result.verdict == "violation"
    (key,) = result.violations
    assert "read -> 'a'" in key.reason
    assert {op.value for op in key.evidence} >= {"a", "b"}


def test_read_concurrent_with_a_write_may_see_old_or_new() -> None:
    assert verdict(w("a", 0, 1), w("b", 2, 10), r("a", 3, 4), r("b", 5, 6)) == "ok"
    assert verdict(w("a", 0, 1), w("b", 2, 10), r("b", 3, 4), r("b", 5, 6)) == "ok"


def test_reads_cannot_flip_back_during_a_concurrent_write() -> None:
    # Once a read saw the new value, a later read cannot see the old one again.
    assert verdict(w("a", 0, 1), w("b", 2, 10), r("b", 3, 4), r("a", 5, 6)) == "violation"


def test_concurrent_writes_in_either_order() -> None:
    assert verdict(w("a", 0, 5), w("b", 0, 5), r("a", 6, 7)) == "ok"
    assert verdict(w("a", 0, 5), w("b", 0, 5), r("b", 6, 7)) == "ok"
    # ...but the order must be the same for every later read.
    assert verdict(w("a", 0, 5), w("b", 0, 5), r("b", 6, 7), r("a", 8, 9)) == "violation"


def test_indeterminate_write_that_took_effect() -> None:
    assert verdict(w("a", 0, 1), w("b", 2, 3, "info"), r("b", 10, 11)) == "ok"


def test_indeterminate_write_that_took_effect_much_later() -> None:
    assert verdict(w("a", 0, 1), w("b", 2, 3, "info"), r("a", 10, 11), r("b", 20, 21)) == "ok"


def test_indeterminate_write_that_did_not_happen() -> None:
    assert verdict(w("a", 0, 1), w("b", 2, 3, "info"), r("a", 10, 11)) == "ok"


def test_indeterminate_write_cannot_be_undone() -> None:
    assert verdict(w("a", 0, 1), w("b", 2, 3, "info"), r("b", 10, 11), r("a", 12, 13)) == "violation"


def test_many_unobserved_indeterminate_writes_do_not_blow_up_the_search() -> None:
    # 40 timed-out writes that nobody read: each may or may not have happened (2^40 combinations),
    # but none can matter, so they are dropped before the search.
    ops = [w("a", 0, 1)]
    ops += [w(f"lost{i}", 2 + i, 2.5 + i, "info", session=i) for i in range(40)]
    ops += [r("a", 50, 51), w("b", 52, 53), r("b", 54, 55)]
    result = linearizability.check(ops, max_states=10_000)
    assert result.verdict == "ok"
    assert result.keys[0].ops == 4


def test_indeterminate_delete_observed_as_absent_is_kept() -> None:
    assert verdict(w("a", 0, 1), d(2, 3, "info"), r(None, 4, 5)) == "ok"
    assert verdict(w("a", 0, 1), d(2, 3, "info"), r(None, 4, 5), r("a", 6, 7)) == "violation"


def test_failed_write_never_takes_effect() -> None:
    result = linearizability.check([w("a", 0, 1), w("b", 2, 3, "fail"), r("b", 4, 5)])
    assert result.verdict == "violation"
    assert "no write invoked before it" in result.violations[0].reason


def test_failed_reads_are_ignored() -> None:
    assert verdict(w("a", 0, 1), r("zzz", 2, 3, "fail"), r("a", 4, 5)) == "ok"


def test_read_of_a_value_written_only_later_is_a_violation() -> None:
    assert verdict(r("a", 0, 1), w("a", 2, 3)) == "violation"


def test_deletes_write_absent() -> None:
    assert verdict(w("a", 0, 1), d(2, 3), r(None, 4, 5)) == "ok"
    assert verdict(w("a", 0, 1), d(2, 3), r("a", 4, 5)) == "violation"
    assert verdict(w("a", 0, 1), r(None, 2, 3)) == "violation"


def test_keys_are_independent_registers() -> None:
    result = linearizability.check(
        [w("a", 0, 1, key="x"), r("a", 2, 3, key="x"), w("b", 0, 1, key="y"), r(None, 2, 3, key="y")]
    )
    assert result.verdict == "violation"
    assert [k.key for k in result.violations] == ["y"]
    assert [k.verdict for k in result.keys] == ["ok", "violation"]


def test_too_many_operations_is_unknown_not_a_pass() -> None:
    result = linearizability.check([w("a", 0, 1), r("a", 2, 3), r("a", 4, 5)], max_ops_per_key=2)
    assert result.verdict == "unknown"
    assert "bound hit" in result.keys[0].reason
    assert "UNKNOWN" in result.summary()


def test_out_of_time_is_unknown_not_a_pass() -> None:
    ops = [w(f"v{i}", 0, 100) for i in range(30)] + [r(f"v{i}", 101 + i, 101.5 + i) for i in range(30)]
    result = linearizability.check(ops, time_limit=0.0)
    assert result.verdict == "unknown"
    assert "out of time" in result.keys[0].reason


def test_state_bound_is_unknown_not_a_pass() -> None:
    ops = [w(f"v{i}", 0, 100) for i in range(12)] + [r("v0", 101, 102)]
    result = linearizability.check(ops, max_states=5)
    assert result.verdict == "unknown"


def test_many_concurrent_writes_are_checked_quickly_thanks_to_memoisation() -> None:
    # Rounds of 8 overlapping writes, then 8 overlapping reads that pin which write went last:
    # without memoisation each round would try up to 8! orders.
    ops = []
    for n in range(30):
        t = 10.0 * n
        ops += [w(f"v{n}-{i}", t, t + 5, session=i) for i in range(8)]
        ops += [r(f"v{n}-3", t + 6, t + 7, session=i) for i in range(8)]
    started = time.monotonic()
    assert verdict(*ops) == "ok"
    assert time.monotonic() - started < 10
    ops.append(r("v29-4", 400, 401))
    assert verdict(*ops) == "violation"


def test_all_concurrent_history_hits_the_state_bound_not_a_silent_pass() -> None:
    ops = [w(f"v{i}", 0, 50, session=i) for i in range(20)] + [r(f"v{i}", 0, 50) for i in range(20)]
    result = linearizability.check(ops, max_states=20_000)
    assert result.verdict == "unknown"
    assert "states" in result.keys[0].reason


def test_long_sequential_history() -> None:
    ops = []
    t = 0.0
    for i in range(2000):
        ops.append(w(f"v{i}", t, t + 0.5))
        ops.append(r(f"v{i}", t + 0.6, t + 0.9))
        t += 1
    assert verdict(*ops) == "ok"


# The history is cut where no acknowledged operation is in flight, and the pieces are checked one
# after the other from the states the register can be in at each cut. These pin what must cross.


def pieces(*ops: Op) -> int:
    return linearizability.check(list(ops)).keys[0].pieces


def test_a_cut_falls_only_where_nothing_acknowledged_is_in_flight() -> None:
    assert pieces(w("a", 0, 1), r("a", 2, 3), r("a", 4, 5)) == 3
    assert pieces(w("a", 0, 2), r("a", 1, 3), r("a", 2.5, 5)) == 1
    # A timed-out write is in flight for ever, but does not hold a cut back: it is carried.
    assert pieces(w("a", 0, 1), w("b", 2, 3, "info"), r("a", 4, 5), r("b", 6, 7)) == 4


def test_no_cut_between_calls_that_meet_at_one_instant() -> None:
    # The read starts as the write returns: it may come first, and see the key still absent.
    assert pieces(w("a", 0, 1), r(None, 1, 2)) == 1
    assert verdict(w("a", 0, 1), r(None, 1, 2)) == "ok"


def test_concurrent_writes_whose_order_a_later_piece_decides() -> None:
    writes = [w("a", 0, 2), w("b", 1, 3), d(1.5, 2.5)]
    assert verdict(*writes, r("a", 4, 5), r("a", 6, 7)) == "ok"
    assert verdict(*writes, r(None, 4, 5)) == "ok"
    assert verdict(*writes, r("b", 4, 5), r(None, 6, 7)) == "violation"


def test_indeterminate_write_carried_across_cuts_takes_effect_once() -> None:
    start = [w("a", 0, 1), w("b", 2, 3, "info"), r("a", 4, 5), w("c", 6, 7), r("c", 8, 9)]
    assert verdict(*start, r("b", 10, 11), r("b", 12, 13)) == "ok"
    # Once b replaced c, c is gone; and b cannot come back after d replaced it.
    assert verdict(*start, r("b", 10, 11), r("c", 12, 13)) == "violation"
    assert verdict(*start, r("b", 10, 11), w("d", 12, 13), r("b", 14, 15)) == "violation"


def test_each_indeterminate_delete_takes_effect_at_most_once() -> None:
    once = [w("a", 0, 1), d(2, 3, "info"), r("a", 4, 5), r(None, 6, 7), w("b", 8, 9), r("b", 10, 11)]
    assert verdict(*once) == "ok"
    assert verdict(*once, r(None, 12, 13)) == "violation"
    assert verdict(*once, d(2.5, 3, "info", session=1), r(None, 12, 13)) == "ok"


def test_indeterminate_delete_invoked_as_an_absent_read_returns_may_have_come_first() -> None:
    # Equal times overlap, for the pruning of indeterminate calls too (it once dropped this one).
    assert verdict(w("a", 0, 1), r(None, 9, 10), d(10, 11, "info")) == "ok"


def test_a_violation_after_a_cut_says_what_the_register_could_hold() -> None:
    result = linearizability.check([w("a", 0, 1), w("b", 2, 3), w("c", 2, 3, session=1), r("a", 4, 5)])
    (key,) = result.violations
    assert "before 4.000" in key.reason
    assert "could then hold <a value no later read returns>" in key.reason  # b or c: alike
    assert {op.value for op in key.evidence} >= {"a", "b", "c"}


def test_the_state_bound_is_per_piece_not_per_key() -> None:
    ops = [
        op for i in range(500) for op in (w(f"v{i}", 2 * i, 2 * i + 0.5), r(f"v{i}", 2 * i + 1, 2 * i + 1.5))
    ]
    result = linearizability.check(ops, max_states=5)
    assert result.verdict == "ok"
    assert result.keys[0].pieces == 1000
    assert result.keys[0].states > 5


def test_out_of_time_across_many_pieces_is_unknown_not_a_pass() -> None:
    ops = [w(f"v{i}", 2 * i, 2 * i + 0.5) for i in range(100)]
    result = linearizability.check(ops, time_limit=0.0)
    assert result.verdict == "unknown"
    assert "out of time" in result.keys[0].reason


def test_indeterminate_write_takes_effect_after_it_starts_even_for_a_long_read() -> None:
    # The long read of b can only come after the timed-out write of b, so after the write of c,
    # which returned before b's write started: c cannot be read after b.
    start = [r("b", 0, 10), w("c", 1, 2, session=1), w("b", 5, 6, "info", session=2)]
    assert verdict(*start, r("b", 11, 12)) == "ok"
    assert verdict(*start, r("c", 11, 12)) == "violation"


def test_indeterminate_write_takes_effect_once_inside_one_piece() -> None:
    # The long read holds the whole history in one piece.
    start = [w("a", 0, 1), r("a", 0.5, 100, session=1), w("b", 2, 2.5, "info"), r("b", 3, 4), w("c", 5, 6)]
    assert pieces(*start) == 1
    assert verdict(*start, r("c", 7, 8)) == "ok"
    assert verdict(*start, r("b", 7, 8)) == "violation"

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

"""The memory that decisions keep in the status: it reads back what it wrote, ignores what it
cannot read, and keeps each operation's back-off apart."""

from __future__ import annotations

import datetime

from kvoperator.memory import Memory, PodRecord, RebuildReported, Retry

T = datetime.datetime(2025, 6, 1, 12, 0, 0, 250000, tzinfo=datetime.UTC)


def later(seconds: float) -> datetime.datetime:
    return T + datetime.timedelta(seconds=seconds)


def test_it_reads_back_what_it_wrote_to_the_microsecond() -> None:
    memory = Memory(
        pods={
            "kv-1": PodRecord("kv-1", "u1", 2, failing_since=T),
            "kv-0": PodRecord("kv-0", "u0", 0, rebuild=RebuildReported.FINISHED),
        },
        retries={"restore": Retry("restore", T, later(10), "RestoreFailed", "gone")},
        scale_down_refusal="spec.replicas=2 is below replicationFactor=3",
    )
    status = memory.to_status()
    assert [p["name"] for p in status["podHealth"]] == ["kv-0", "kv-1"]  # a stable order
    assert status["podHealth"][1]["failingSince"] == "2025-06-01T12:00:00.250000Z"
    assert Memory.from_status(status) == memory


def test_what_it_cannot_read_is_ignored() -> None:
    status = {
        "podHealth": [{"uid": "no name"}, "junk", {"name": "kv-0", "rebuild": "Sideways"}, {"name": "kv-1"}],
        "retries": [{"operation": "membership"}, {"operation": "restore", "lastFailureTime": "x"}],
        "scaleDownRefusal": None,
    }
    memory = Memory.from_status(status)
    assert list(memory.pods) == ["kv-1"] and memory.retries == {} and memory.scale_down_refusal == ""
    assert Memory.from_status({"podHealth": "not a list"}) == Memory()


def test_a_new_start_of_a_pod_begins_a_fresh_record() -> None:
    memory = Memory()
    memory.keep_pod(PodRecord("kv-1", "u1", 0, failing_since=T, rebuild=RebuildReported.STARTED))
    assert memory.pod("kv-1", "u1", 0).failing_since == T
    assert memory.pod("kv-1", "u1", 1) == PodRecord("kv-1", "u1", 1)
    assert memory.pod("kv-1", "u2", 0) == PodRecord("kv-1", "u2", 0)
    memory.healthy("kv-1")
    assert memory.pods["kv-1"] == PodRecord("kv-1", "u1", 0, rebuild=RebuildReported.STARTED)
    memory.forget_pods_except({"kv-0"})
    assert memory.pods == {}


def test_each_operation_has_its_own_back_off() -> None:
    memory = Memory()
    memory.failed("restore", T, 10, "RestoreFailed", "gone")
    assert memory.may_start("membership", T) and not memory.may_start("restore", later(9.9))
    assert memory.may_start("restore", later(10))
    memory.failed("membership", T, 5, "MembershipChangeFailed", "boom")
    memory.clear_failure("membership", later(1))  # nothing left to do: stop reporting it ...
    assert memory.failure("membership") is None
    assert not memory.may_start("membership", later(2))  # ... but the back-off stays
    memory.clear_failure("membership", later(6))
    assert "membership" not in memory.retries
    memory.succeeded("restore")
    assert memory.retries == {}

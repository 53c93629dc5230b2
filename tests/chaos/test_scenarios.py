"""Chaos scenarios against real kvnode processes; each asserts the checker's verdict.

Every scenario prints its report (``pytest -s``, and in the failure message) and saves its history,
report and throughput plot under $CHAOS_ARTIFACTS (or pytest's temporary directory). $CHAOS_SEED
replays a run's workload choices. See docs/chaos.md.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.chaos import report, scenario
from e2e.chaos.faults import FaultLog
from e2e.chaos.history import OK, History
from e2e.chaos.workload import WorkloadConfig, read_final
from kvnode import failpoints
from kvnode.cluster.clock import physical_ms
from tests.chaos.conftest import Lab, MakeLab
from tests.chaos.hostile import REFUSALS, Hostile

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

# The FoundationDB operator's chaos suite allows 30 s of unavailability; we hold ourselves to less.
MAX_UNAVAILABLE_SECONDS = 10.0


def config(**kw: Any) -> WorkloadConfig:
    return WorkloadConfig(seed=scenario.pick_seed(), **kw)


async def run(
    lab: Lab, name: str, cfg: WorkloadConfig, duration: float, artifacts: Path, **kw: Any
) -> scenario.ScenarioResult:
    return await scenario.run(
        name, lab.endpoints, cfg, duration=duration, artifacts=artifacts,
        heal=lab.faults.heal, clock=lab.clock, history=lab.history,
        credentials=lab.cluster.credentials, **kw,
    )  # fmt: skip


def assert_clean(result: scenario.ScenarioResult, *, linearizable: bool = False) -> None:
    assert result.check.lost_writes.lost == [], result.failure("acknowledged writes were lost")
    assert result.check.violations == [], result.failure("the checker found violations")
    if linearizable:
        assert result.check.linearizability_verdict == "ok", result.failure("linearizability not proven")
    assert result.check.ok, result.failure()
    assert result.check.lost_writes.keys_checked > 0, result.failure("no key was written")
    assert result.stats.unavailable.length < MAX_UNAVAILABLE_SECONDS, result.failure(
        f"unavailable for {result.stats.unavailable.length:.1f}s"
    )


def phases(history: History, cuts: list[float]) -> dict[str, float]:
    names = ["before", "during", "after"]
    return {
        f"throughput_{names[i]}": round(report.throughput_between(history.ops, a, b), 1)
        for i, (a, b) in enumerate(itertools.pairwise(cuts))
    }


async def test_crash_recovery(make_lab: MakeLab, artifacts: Path) -> None:
    """kill -9 one node under load, restart it on the same data dir; then another one."""
    lab = make_lab()

    async def faults(log: FaultLog) -> None:
        await lab.faults.crash(1, after=2, down_for=3)
        await lab.faults.crash(2, after=1, down_for=2)

    cfg = config(sessions=6, keys=40, levels=("QUORUM", "QUORUM", "LINEARIZABLE"))
    assert_clean(await run(lab, "crash-recovery", cfg, 12, artifacts, faults=faults), linearizable=True)


async def test_crash_recovery_with_client_and_peer_tls(make_lab: MakeLab, artifacts: Path) -> None:
    """The crash scenario on a cluster that serves mutual TLS on client and peer ports: restarts,
    hints and reconnects all go through TLS handshakes, and nothing acknowledged is lost."""
    lab = make_lab(tls=True)

    async def faults(log: FaultLog) -> None:
        await lab.faults.crash(1, after=2, down_for=3)

    cfg = config(sessions=6, keys=40, levels=("QUORUM", "QUORUM", "LINEARIZABLE"))
    assert_clean(await run(lab, "crash-recovery-tls", cfg, 10, artifacts, faults=faults), linearizable=True)


async def test_kill_minority_of_five(make_lab: MakeLab, artifacts: Path) -> None:
    """Five nodes, RF=3: kill -9 two at once (a minority), restart both on their data dirs."""
    lab = make_lab(5)

    async def faults(log: FaultLog) -> None:
        await lab.faults.crash(3, 4, after=2, down_for=4)

    cfg = config(sessions=6, keys=60, levels=("QUORUM", "LINEARIZABLE"))
    assert_clean(await run(lab, "kill-minority-of-5", cfg, 10, artifacts, faults=faults), linearizable=True)


async def test_partial_failure(make_lab: MakeLab, artifacts: Path) -> None:
    """One node is down for the whole run: the other two serve every key at QUORUM."""
    lab = make_lab()
    await lab.faults.kill(2)
    dead = lab.cluster[2].address
    cfg = config(sessions=6, keys=50, levels=("QUORUM",))
    result = await run(lab, "partial-failure", cfg, 8, artifacts)
    assert_clean(result)
    live = [op for op in result.history.ops if op.endpoint != dead]
    failed = [op for op in live if op.outcome != OK]
    assert len(live) > 100, result.failure("too few operations through the live nodes")
    assert len(failed) <= len(live) // 100, result.failure(f"{len(failed)} calls to live nodes failed")
    served = {op.key for op in live if op.outcome == OK and op.kind == "read"}
    unserved = {op.key for op in result.history.ops} - served
    assert not unserved, result.failure(f"keys never read while a node was down: {sorted(unserved)}")


@pytest.mark.parametrize("network", ["netns", "proxy"])
async def test_partition_heal_converge(make_lab: MakeLab, artifacts: Path, network: str) -> None:
    """Isolate one node from its peers (clients still reach every node) while the majority takes
    updates; heal; the replicas converge and nothing acknowledged is lost."""
    lab = make_lab(network=network)

    async def faults(log: FaultLog) -> None:
        await lab.faults.wait(2)
        await lab.faults.isolate(2)
        await lab.faults.wait(5)
        await lab.faults.heal()

    cfg = config(sessions=6, keys=40, levels=("QUORUM", "QUORUM", "LINEARIZABLE"))
    result = await run(lab, f"partition-{network}", cfg, 10, artifacts, faults=faults)
    assert_clean(result, linearizable=True)
    during = [
        op for op in result.history.ops if 3 <= op.invoke <= 6 and op.endpoint != lab.cluster[2].address
    ]
    assert any(op.outcome == OK and op.is_write for op in during), result.failure("majority took no update")


async def test_concurrent_writes_to_the_same_keys(make_lab: MakeLab, artifacts: Path) -> None:
    """Eight sessions hammer three keys per level, write-heavy, while one node is paused
    (SIGSTOP/SIGCONT, as in a GC or VM stall)."""
    lab = make_lab()

    async def faults(log: FaultLog) -> None:
        await lab.faults.wait(3)
        await lab.faults.pause(0)
        await lab.faults.wait(2)
        await lab.faults.resume(0)

    cfg = config(sessions=8, keys=3, read_fraction=0.3, levels=("QUORUM", "LINEARIZABLE"))
    assert_clean(await run(lab, "concurrent-writes", cfg, 9, artifacts, faults=faults), linearizable=True)


async def test_throughput_under_failure(make_lab: MakeLab, artifacts: Path) -> None:
    """Throughput before, during and after a node kill; the longest unavailability window is bounded."""
    lab = make_lab()
    marks: list[float] = []

    async def faults(log: FaultLog) -> None:
        await lab.faults.wait(4)
        marks.append(lab.clock.now())
        await lab.faults.kill(0)
        await lab.faults.wait(4)
        await lab.faults.restart(0)
        marks.append(lab.clock.now())

    def figures(history: History) -> dict[str, Any]:
        # In report.txt and report.json too, so that the figure can be quoted after a CI run.
        during = report.stats(history, marks[0], marks[1]).unavailable
        return {
            **phases(history, [0.0, marks[0], marks[1], history.duration]),
            "unavailable_during_kill_s": round(during.length, 2),
            "unavailable_during_kill_window": [round(during.start, 2), round(during.end, 2)],
        }

    cfg = config(sessions=6, keys=100, levels=("QUORUM",))
    result = await run(lab, "throughput-under-failure", cfg, 13, artifacts, faults=faults, extra=figures)
    assert_clean(result)
    unavailable = result.extra["unavailable_during_kill_s"]
    assert unavailable < MAX_UNAVAILABLE_SECONDS, result.failure(
        f"unavailable for {unavailable}s in the kill"
    )
    assert result.extra["throughput_during"] > 0, result.failure("no throughput while a node was down")


@pytest.mark.parametrize(("mix", "read_fraction"), [("hotcold", 0.5), ("zipf", 0.7)])
async def test_key_mixes(make_lab: MakeLab, artifacts: Path, mix: str, read_fraction: float) -> None:
    """Hot/cold (10% of keys get 90% of requests) and Zipfian 70/30 runs: throughput and p50/p99."""
    lab = make_lab()

    async def faults(log: FaultLog) -> None:
        await lab.faults.crash(1, after=3, down_for=2)

    cfg = config(sessions=8, keys=200, mix=mix, read_fraction=read_fraction, levels=("QUORUM",))
    result = await run(lab, f"mix-{mix}", cfg, 8, artifacts, faults=faults)
    assert_clean(result)
    assert result.stats.throughput > 0 and result.stats.p99_ms >= result.stats.p50_ms > 0


async def test_linearizable_under_kill(make_lab: MakeLab, artifacts: Path) -> None:
    """Only LINEARIZABLE sessions, concurrent on few keys, while a node is killed and restarted."""
    lab = make_lab()

    async def faults(log: FaultLog) -> None:
        await lab.faults.crash(2, after=2, down_for=3)

    cfg = config(sessions=6, keys=8, read_fraction=0.5, levels=("LINEARIZABLE",))
    result = await run(lab, "linearizable-under-kill", cfg, 9, artifacts, faults=faults)
    assert_clean(result, linearizable=True)


@pytest.mark.parametrize("bound", ["5s", "1s"], ids=["within-the-bound", "beyond-the-bound"])
async def test_clock_skew(make_lab: MakeLab, artifacts: Path, bound: str) -> None:
    """One node's clock runs 1.5 s ahead, another's 1.5 s behind (--clock-offset-ms). Within a
    --max-clock-offset of 5 s the hybrid clocks order every write. Beyond the default bound of 1 s
    the nodes refuse each other's clocks: writes through the skewed nodes fail (with an unknown
    outcome where some replica took them), and the history must still be clean."""
    skews = {1: 1500, 2: -1500}
    lab = make_lab(
        extra_args=("--max-clock-offset", bound),
        node_args={i: ["--clock-offset-ms", str(ms)] for i, ms in skews.items()},
    )
    for i, ms in skews.items():
        lab.faults.log.begin("clock skew", lab.cluster[i].node_id, f"{ms:+d} ms")

    async def faults(log: FaultLog) -> None:
        await lab.faults.crash(1, after=3, down_for=2)

    cfg = config(sessions=6, keys=20, levels=("LINEARIZABLE", "QUORUM"))
    result = await run(lab, f"clock-skew-{bound}", cfg, 9, artifacts, faults=faults)
    assert_clean(result, linearizable=True)


async def test_hostile_client(make_lab: MakeLab, artifacts: Path) -> None:
    """Throughout the workload, and a kill -9 of kv-1, one more client sends every node requests
    that must be refused (tests/chaos/hostile.py): keys and values over the limits, a batch write
    with bad items among good ones, a batch read over the byte budget, bytes that do not parse, and
    as a peer a clock near 2^64 and a record from the future. Each is refused with a definite
    status, none of them changes anything, and the workload's history is as clean as ever."""
    lab = make_lab()
    cfg = config(sessions=6, keys=40, levels=("QUORUM", "QUORUM", "LINEARIZABLE"))
    hostile = Hostile(lab.endpoints, lab.clock, prefix=f"hostile{cfg.seed}/", seed=cfg.seed)
    await hostile.prepare()
    seconds = 10.0

    async def faults(log: FaultLog) -> None:
        async with log.span("hostile client", "every node"):
            await asyncio.gather(hostile.run(seconds), lab.faults.crash(1, after=3, down_for=3))

    def figures(history: History) -> dict[str, Any]:
        return {
            "hostile_requests": len(hostile.probes),
            "hostile_statuses": hostile.counts(),
            "hostile_reads_short_of_replicas": [p.describe(lab.endpoints) for p in hostile.unreached()],
        }

    result = await run(lab, "hostile-client", cfg, seconds, artifacts, faults=faults, extra=figures)
    assert_clean(result, linearizable=True)
    node_ids = [node.node_id for node in lab.cluster.nodes]
    wrong = hostile.violations(result.history.faults, node_ids)
    assert wrong == [], result.failure(
        f"{len(wrong)} hostile requests were not refused:\n"
        + "\n".join(p.describe(lab.endpoints) for p in wrong[:20])
    )
    assert len(hostile.probes) >= 150, result.failure(f"only {len(hostile.probes)} hostile requests")
    refused = {(p.node, p.name) for p in hostile.probes if p.code in REFUSALS}
    missing = {(n, p.name) for n in range(len(lab.endpoints)) for p in hostile.probes} - refused
    assert not missing, result.failure(f"never refused: {sorted(missing)}")
    # Nothing a refused request named was stored, anywhere: read at ALL after healing.
    final = await read_final(lab.endpoints, hostile.must_be_absent())
    leaked = {k: v for k, v in final.items() if v is not None}
    assert leaked == {}, result.failure(f"refused requests left values behind: {leaked}")
    # The clock near 2^64 and the record from the future moved no node's clock.
    newest = max(physical_ms(op.version[0]) for op in result.history.ops if op.version)
    assert newest < time.time_ns() // 1_000_000 + 60_000, result.failure(f"a version from {newest} ms")


async def test_checker_catches_lost_writes_of_a_broken_build(make_lab: MakeLab, artifacts: Path) -> None:
    """The proof that the checker can fail: nodes started with the test-only failpoint
    ack-before-replication acknowledge a write before storing it anywhere. Killing a node under load
    loses the writes it acknowledged in its last second, and the checker must say so."""
    lab = make_lab(env={failpoints.ENV: "ack-before-replication=1s"})

    async def faults(log: FaultLog) -> None:
        await lab.faults.wait(3)  # the workload stops now; kv-0 dies before it replicates its last second
        await lab.faults.kill(0)

    # Many keys, so that for many of them the last write was one that kv-0 acknowledged and lost.
    cfg = config(sessions=6, keys=400, read_fraction=0.2, levels=("QUORUM",), switch_probability=0.0)
    result = await run(lab, "broken-build", cfg, 3, artifacts, faults=faults)
    lost = result.check.lost_writes.lost
    print(
        f"broken build: the checker found {len(lost)} lost writes "
        f"({len(result.check.violations)} violations in all)"
    )
    assert lost, result.failure("the checker did not notice the lost writes of a broken build")
    assert not result.check.ok
    assert all(op.endpoint == lab.cluster[0].address for op in lost), result.failure("unexpected loss")


SOAK_SECONDS = float(os.environ.get("CHAOS_SOAK_SECONDS", "120"))
SOAK_SESSIONS = 8
SOAK_THINK_TIME = 0.01  # a session pauses this long between calls on average, so it makes < 100/s
# The most calls the soak's sessions can make: a bound on its history that never ends it early (the
# default of 200,000 stopped a 900 s soak after about 650 s). The soaks make 300 to 400 a second.
SOAK_MAX_OPS = max(WorkloadConfig.max_ops, int(SOAK_SECONDS * SOAK_SESSIONS / SOAK_THINK_TIME))


@pytest.mark.soak
@pytest.mark.timeout(int(SOAK_SECONDS) * 3 + 300)
@pytest.mark.parametrize("network", ["proxy", "netns"])
async def test_soak_mixed_faults(make_lab: MakeLab, artifacts: Path, network: str) -> None:
    """Long run ($CHAOS_SOAK_SECONDS, default 120 s): kills, pauses and partitions in turn."""
    lab = make_lab(network=network)

    async def faults(log: FaultLog) -> None:
        cycle = 0
        while lab.clock.now() < SOAK_SECONDS - 12:
            node = cycle % 3
            await lab.faults.wait(2)
            if cycle % 3 == 0:
                await lab.faults.kill(node)
                await lab.faults.wait(4)
                await lab.faults.restart(node)
            elif cycle % 3 == 1:
                await lab.faults.pause(node)
                await lab.faults.wait(3)
                await lab.faults.resume(node)
            else:
                await lab.faults.isolate(node)
                await lab.faults.wait(5)
                await lab.faults.heal()
            cycle += 1

    cfg = config(
        sessions=SOAK_SESSIONS,
        keys=100,
        mix="zipf",
        read_fraction=0.7,
        levels=("QUORUM", "LINEARIZABLE"),
        think_time=SOAK_THINK_TIME,
        max_ops=SOAK_MAX_OPS,
    )
    result = await run(
        lab, f"soak-{network}", cfg, SOAK_SECONDS, artifacts, faults=faults, lin_time_limit=120
    )
    assert_clean(result, linearizable=True)

"""One chaos run, end to end: workload and fault script side by side, then heal, converge, read the
final values at ALL, check the history and write the report.

Only endpoints and two callables (the fault script and the healing) come in, so the kind suite can
run the same thing with its own faults.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.chaos import cluster, report
from e2e.chaos.checker import CheckResult, check_history
from e2e.chaos.faults import FaultLog
from e2e.chaos.history import History
from e2e.chaos.workload import Clock, Workload, WorkloadConfig, read_final

FaultScript = Callable[[FaultLog], Awaitable[None]]
Heal = Callable[[], Awaitable[None]]


def pick_seed() -> int:
    """$CHAOS_SEED if set (to reproduce a run), else a fresh one; always printed in the report."""
    env = os.environ.get("CHAOS_SEED")
    return int(env) if env else random.SystemRandom().randrange(1, 2**31)


@dataclass
class ScenarioResult:
    name: str
    history: History
    check: CheckResult
    stats: report.Stats
    artifacts: Path
    text: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.history.meta["seed"])

    def failure(self, why: str = "") -> str:
        """The message for a failed assertion: what failed, the seed, and where the evidence is."""
        return (
            f"chaos scenario {self.name} failed{': ' + why if why else ''}\n"
            f"seed {self.seed} (rerun with CHAOS_SEED={self.seed}); "
            f"history and report saved in {self.artifacts}\n"
            f"{self.text}"
        )


async def run(
    name: str,
    endpoints: Sequence[str],
    config: WorkloadConfig,
    *,
    duration: float,
    artifacts: Path,
    faults: FaultScript | None = None,
    heal: Heal | None = None,
    converge: bool = True,
    clock: Clock | None = None,
    history: History | None = None,
    lin_time_limit: float = 30.0,
    extra: Callable[[History], dict[str, Any]] | None = None,
) -> ScenarioResult:
    clock = clock or Clock()
    history = history or History()
    log = FaultLog(history, clock)
    workload = Workload(endpoints, config, clock, history)
    stop = asyncio.Event()
    start = clock.now()
    running = asyncio.create_task(workload.run(duration, stop))
    try:
        if faults is not None:
            await faults(log)
    except BaseException:
        stop.set()
        await asyncio.gather(running, return_exceptions=True)
        raise
    await running
    end = clock.now()
    if heal is not None:
        await heal()
    digests = placement = None
    if converge:
        await cluster.wait_hints_drained(endpoints, timeout=60)
        await cluster.run_anti_entropy(endpoints)
        digests, placement = await cluster.collect_digests(endpoints)
    history.final = await read_final(endpoints, workload.keys())
    result = check_history(history, digests=digests, placement=placement, lin_time_limit=lin_time_limit)
    st = report.stats(history, start, end)
    details = extra(history) if extra else {}
    directory = artifacts / name
    text = report.write(directory, name, history, result, st, details)
    print(f"\n{text}\nartifacts: {directory}", file=sys.stderr)
    return ScenarioResult(name, history, result, st, directory, text, details)

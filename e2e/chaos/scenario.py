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
from e2e.chaos.channels import CREDENTIALS
from e2e.chaos.checker import CheckResult, check_history
from e2e.chaos.faults import FaultLog
from e2e.chaos.history import History
from e2e.chaos.workload import Clock, Workload, WorkloadConfig, read_final
from kvnode.client import Credentials

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
            f"seed {self.seed} ({rerun_hint(self.seed)}); "
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
    credentials: Credentials | None = None,
) -> ScenarioResult:
    """Run the workload with ``faults`` for ``duration`` seconds, heal, converge, read the final
    values, check, and save the report under ``artifacts/name``. If anything raises, the history so
    far is saved there with an incomplete report, and the error's notes give the seed and folder.
    ``credentials``: for a cluster that serves TLS (every channel the run opens uses them)."""
    if credentials is not None:
        CREDENTIALS.set(credentials)  # this task's context, inherited by the tasks it starts
    clock = clock or Clock()
    history = history or History()
    history.meta.setdefault("seed", config.seed)  # in the saved history even if the workload never starts
    directory = artifacts / name
    stage = "the workload and faults"
    start = clock.now()
    end: float | None = None
    try:
        log = FaultLog(history, clock)
        workload = Workload(endpoints, config, clock, history)
        stop = asyncio.Event()
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
        stage = "healing"
        if heal is not None:
            await heal()
        # Healed is when every node reaches every peer again, not when the fault is lifted: the
        # peer links notice a heal on their next successful call (within a second or so), and until
        # then anti-entropy skips the peer and a read at ALL fails.
        stage = "waiting for every node to reach every peer"
        await cluster.wait_healed(endpoints, timeout=60)
        digests = placement = None
        if converge:
            stage = "convergence (hints, anti-entropy, digests)"
            await cluster.wait_hints_drained(endpoints, timeout=60)
            await cluster.run_anti_entropy(endpoints)
            digests, placement = await cluster.collect_digests(endpoints)
        stage = "the final reads"
        try:
            history.final = await read_final(endpoints, workload.keys())
        except TimeoutError as exc:
            exc.add_note(f"nodes holding peers unreachable now: {await _unreachable(endpoints)}")
            raise
        stage = "the check and report"
        result = check_history(history, digests=digests, placement=placement, lin_time_limit=lin_time_limit)
        st = report.stats(history, start, end)
        details = extra(history) if extra else {}
        text = report.write(directory, name, history, result, st, details)
    except BaseException as exc:
        # Also on a pytest timeout or Ctrl-C: an errored run must leave its seed and evidence too.
        _save_incomplete(exc, directory, name, history, stage, start, clock.now() if end is None else end)
        raise
    print(f"\n{text}\nartifacts: {directory}", file=sys.stderr)
    return ScenarioResult(name, history, result, st, directory, text, details)


async def _unreachable(endpoints: Sequence[str]) -> str:
    try:
        pending = await cluster.unreachable_peers(endpoints)
    except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the error it explains
        return f"unknown ({exc!r})"
    return str(pending) if pending else "none"


def rerun_hint(seed: object) -> str:
    """How to replay a run: the seed, and the current pytest test when there is one."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    return f"rerun with CHAOS_SEED={seed}" + (f" pytest '{test}'" if test else "")


def _save_incomplete(
    exc: BaseException, directory: Path, name: str, history: History, stage: str, start: float, end: float
) -> None:
    """Save what ``history`` holds and add the seed and the artifacts folder to ``exc``'s message."""
    seed = history.meta.get("seed")
    error = f"{type(exc).__name__}: {exc}"
    try:
        st = report.stats(history, start, max(start, end))
        text = report.write_incomplete(directory, name, history, st, stage, error)
        print(f"\n{text}\nartifacts: {directory}", file=sys.stderr)
        saved = f"history so far and report saved in {directory}"
    except Exception as save_error:  # noqa: BLE001 - never hide the original error behind this one
        saved = f"saving the history to {directory} failed too: {save_error!r}"
    exc.add_note(f"chaos scenario {name} errored during {stage}; seed {seed} ({rerun_hint(seed)}); {saved}")

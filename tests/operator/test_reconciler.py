"""The reconciler over the fakes: a pass runs every step over one observation, a failing step is
reported while the others go on, and the loop wakes when the operation ends."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from kvoperator import kube
from kvoperator.passes import Pass, Step
from kvoperator.reconciler import StoreReconciler
from kvoperator.steps import STEPS

from tests.operator.steps.world import NS, World, backup_of_old_store


def reconciler(world: World) -> StoreReconciler:
    return StoreReconciler(world.ctx, NS, "kv")


async def test_a_full_pass_reads_the_backup_to_restore_once(world: World) -> None:
    world.kube.put(kube.KVBACKUPS, backup_of_old_store())
    world.store(restoreFrom={"backupName": "snap"}, backup={"volume": {"claimName": "backups"}})
    world.pods(3)
    store = reconciler(world)
    p = await store.reconcile_once()
    assert p is not None and p.observed.restore_source is not None
    assert world.kube.reads(kube.KVBACKUPS, "snap") == 1
    await store.operations.cancel()


async def test_a_failing_step_is_reported_and_the_pass_goes_on(world: World) -> None:
    world.store()
    world.pods(3)

    async def broken(p: Pass) -> None:
        raise RuntimeError("no luck")

    steps = (Step("broken", broken), *[s for s in STEPS if s.name == "status"])
    p = await reconciler(world).reconcile_once(steps)
    assert p is not None and p.report.degraded == [("ReconcileError", "step broken failed: no luck")]
    degraded = [c for c in world.status()["conditions"] if c["type"] == "Degraded"]
    assert degraded[0]["reason"] == "ReconcileError"
    assert world.metric("kvstore_operator_reconcile_errors_total", step="broken") == 1
    assert world.metric("kvstore_operator_reconciles_total", result="error") == 1


async def test_a_store_that_is_gone_ends_the_pass(world: World) -> None:
    assert await reconciler(world).reconcile_once() is None


async def test_the_end_of_an_operation_wakes_the_loop_and_stopping_cancels_it(world: World) -> None:
    world.store(replicas=4)
    world.pods(3)
    world.pod(3)
    world.admin.reconfig.gate = asyncio.Event()
    store = reconciler(world)
    passed = asyncio.Event()
    one_pass = store.reconcile_once

    async def counted(steps: Sequence[Step] = STEPS) -> Pass | None:
        result = await one_pass(steps)
        passed.set()
        return result

    store.reconcile_once = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop().create_task(store.run(stop.is_set))
    await asyncio.wait_for(world.admin.reconfig.begun.wait(), timeout=5)  # the first pass started it
    passed.clear()
    world.admin.reconfig.gate.set()  # the change ends: a pass follows at once, not after 10s
    await asyncio.wait_for(passed.wait(), timeout=5)
    assert [m.id for m in world.admin.newest().members][-1] == "kv-3"
    assert world.metric("kvstore_operator_membership_changes_total", action="add") == 1  # collected
    stop.set()
    store.wake()
    await asyncio.wait_for(loop, timeout=5)
    assert store.operations.current is None

"""The PDB step: a PodDisruptionBudget while the spec wants one, none when it does not."""

from __future__ import annotations

from kvoperator import kube
from kvoperator.steps import pdb

from tests.operator.steps.world import NS, World


async def test_it_creates_the_budget_from_the_spec(world: World) -> None:
    world.store(podDisruptionBudget={"maxUnavailable": 2})
    world.pods(3)
    await world.run(pdb.run)
    body = world.kube.object(kube.PDBS, NS, "kv")
    assert body is not None and body["spec"]["maxUnavailable"] == 2
    world.kube.forget_calls()
    await world.run(pdb.run)
    assert world.kube.writes == []


async def test_turning_it_off_deletes_the_stores_budget(world: World) -> None:
    world.store()
    world.pods(3)
    await world.run(pdb.run)
    world.edit(podDisruptionBudget={"enabled": False})
    p = await world.run(pdb.run)
    assert world.kube.object(kube.PDBS, NS, "kv") is None
    assert p.report.writes == ["deleted PodDisruptionBudget"]
    assert "DeletedPodDisruptionBudget" in world.events.reasons()


async def test_a_budget_of_someone_else_is_never_deleted(world: World) -> None:
    world.store(podDisruptionBudget={"enabled": False})
    world.pods(3)
    world.kube.put(kube.PDBS, {"metadata": {"name": "kv", "namespace": NS}, "spec": {"maxUnavailable": 1}})
    await world.run(pdb.run)
    assert world.kube.object(kube.PDBS, NS, "kv") is not None
    assert world.kube.writes == []

"""The status step: what the pass found and what the decisions remember, written only when it
changed, and the store's gauges."""

from __future__ import annotations

import logging

import pytest
from kvoperator import memory
from kvoperator.kube import Body, Resource
from kvoperator.memory import PodRecord
from kvoperator.steps import status

from tests.operator.steps.fakes import FakeKube
from tests.operator.steps.world import T0, World, at, hold


def status_writes(world: World) -> int:
    return sum(1 for c in world.kube.writes if c.verb == "patch/status")


async def test_it_writes_the_status_once_and_then_only_changes(world: World) -> None:
    world.store()
    world.pods(3)
    p = await world.run(status.run)
    written = world.status()
    assert written["phase"] == "Running" and written["membershipEpoch"] == 1
    assert written["podHealth"] == [] and written["retries"] == [] and written["scaleDownRefusal"] == ""
    assert p.report.writes == ["status"]
    again = await world.run(status.run, now=at(5))
    assert again.report.writes == [] and status_writes(world) == 1
    assert world.metric("kvstore_operator_ready_replicas") == 3
    assert world.metric("kvstore_operator_members", state="active") == 3


async def test_what_a_step_remembers_is_written_with_it(world: World) -> None:
    world.store()
    world.pods(3)
    await world.run(status.run)
    p = await world.new_pass(at(1))
    p.memory.keep_pod(PodRecord("kv-2", "kv-2-uid", 0, failing_since=at(1)))
    await status.run(p)
    assert world.status()["podHealth"] == [
        {"name": "kv-2", "uid": "kv-2-uid", "restartCount": 0, "failingSince": "2025-06-01T12:00:01.000000Z"}
    ]
    assert (await world.new_pass(at(2))).memory.pods["kv-2"].failing_since == at(1)


async def test_a_running_operation_is_described(world: World) -> None:
    world.store()
    world.pods(3)
    world.operations.start("membership", "ScalingUp", "adding kv-3", hold)
    await world.run(status.run)
    assert world.status()["operation"] == "adding kv-3"
    await world.operations.cancel()


class PruningKube(FakeKube):
    """An API server whose KVStore CRD predates the memory fields: it prunes them."""

    async def patch(
        self, resource: Resource, namespace: str | None, name: str, patch: Body, *, subresource: str = ""
    ) -> Body:
        kept = {k: v for k, v in (patch.get("status") or {}).items() if k not in memory.FIELDS}
        return await super().patch(resource, namespace, name, {"status": kept}, subresource=subresource)


async def test_a_crd_that_prunes_the_memory_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    world = World(PruningKube(T0))
    world.store()
    world.pods(3)
    with caplog.at_level(logging.WARNING, logger="kvoperator.steps.status"):
        await world.run(status.run)
    assert "dropped status.podHealth, status.retries, status.scaleDownRefusal" in caplog.text

"""The services step: the headless and the client Service, kept to the spec."""

from __future__ import annotations

from kvoperator import kube
from kvoperator.steps import services

from tests.operator.steps.world import NS, World


async def test_it_creates_both_services_and_then_writes_nothing(world: World) -> None:
    world.store()
    world.pods(3)
    await world.run(services.run)
    headless = world.kube.object(kube.SERVICES, NS, "kv-headless")
    client = world.kube.object(kube.SERVICES, NS, "kv")
    assert headless is not None and headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert client is not None and client["spec"]["ports"][0]["port"] == 7000
    assert world.events.reasons().count("CreatedService") == 2
    world.kube.forget_calls()
    await world.run(services.run)
    assert world.kube.writes == []


async def test_a_new_port_replaces_the_managed_paths_and_keeps_foreign_labels(world: World) -> None:
    world.store()
    world.pods(3)
    await world.run(services.run)
    client = world.kube.objects[kube.SERVICES, NS, "kv"]
    client["metadata"]["labels"]["team"] = "shop"  # someone else's label
    client["spec"]["clusterIP"] = "10.96.0.7"  # set by the API server
    world.edit(port=7100)
    world.kube.forget_calls()
    await world.run(services.run)
    assert [(c.verb, c.name) for c in world.kube.writes] == [
        ("patch/json", "kv-headless"),
        ("patch/json", "kv"),
    ]
    updated = world.kube.object(kube.SERVICES, NS, "kv")
    assert updated is not None and updated["spec"]["ports"][0]["port"] == 7100
    assert updated["metadata"]["labels"]["team"] == "shop"
    assert updated["spec"]["clusterIP"] == "10.96.0.7"  # not a managed path: left as it is

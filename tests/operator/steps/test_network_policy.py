"""The NetworkPolicy step: the peer port for the store's pods only, the client port for the
selected pods and the operator, the metrics port for monitoring; none when the spec turns it off."""

from __future__ import annotations

from typing import Any

from kvoperator import kube
from kvoperator.steps import network_policy

from tests.operator.steps.world import NS, World

OWN_PODS = {
    "podSelector": {
        "matchLabels": {
            "app.kubernetes.io/name": "kvstore",
            "app.kubernetes.io/instance": "kv",
            "app.kubernetes.io/component": "node",
        }
    }
}
OPERATOR = {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}}}


def rules(world: World) -> dict[int, list[dict[str, Any]]]:
    """The policy's ``from`` list for each port."""
    body = world.kube.object(kube.NETWORK_POLICIES, NS, "kv")
    assert body is not None
    assert body["spec"]["podSelector"] == OWN_PODS["podSelector"]
    assert body["spec"]["policyTypes"] == ["Ingress"]
    found: dict[int, list[dict[str, Any]]] = {}
    for rule in body["spec"]["ingress"]:
        for port in rule["ports"]:
            found[port["port"]] = rule["from"]
    return found


async def test_by_default_the_peer_port_is_for_the_stores_pods_and_clients_are_the_namespace(
    world: World,
) -> None:
    world.store()
    await world.run(network_policy.run)
    found = rules(world)
    assert found[7001] == [OWN_PODS]
    assert found[7000] == [{"podSelector": {}}, OWN_PODS, OPERATOR]
    assert found[9100] == [{"namespaceSelector": {}}]
    world.kube.forget_calls()
    await world.run(network_policy.run)
    assert world.kube.writes == []


async def test_the_user_selects_clients_and_monitoring(world: World) -> None:
    apps = {"matchLabels": {"team": "shop"}}
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    world.store(
        networkPolicy={
            "clientPodSelector": {"matchLabels": {"kv-access": "true"}},
            "clientNamespaceSelector": apps,
            "metricsNamespaceSelector": monitoring,
        }
    )
    await world.run(network_policy.run)
    found = rules(world)
    chosen = {"podSelector": {"matchLabels": {"kv-access": "true"}}, "namespaceSelector": apps}
    assert found[7000] == [chosen, OWN_PODS, OPERATOR]
    assert found[9100] == [{"namespaceSelector": monitoring}]
    assert found[7001] == [OWN_PODS]


async def test_turning_it_off_deletes_the_stores_policy(world: World) -> None:
    world.store()
    await world.run(network_policy.run)
    world.edit(networkPolicy={"enabled": False})
    p = await world.run(network_policy.run)
    assert world.kube.object(kube.NETWORK_POLICIES, NS, "kv") is None
    assert p.report.writes == ["deleted NetworkPolicy"]


async def test_a_policy_of_someone_else_is_never_touched(world: World) -> None:
    world.store(networkPolicy={"enabled": False})
    world.kube.put(kube.NETWORK_POLICIES, {"metadata": {"name": "kv", "namespace": NS}, "spec": {}})
    await world.run(network_policy.run)
    assert world.kube.object(kube.NETWORK_POLICIES, NS, "kv") is not None
    assert world.kube.writes == []

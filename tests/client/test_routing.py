"""Routing single-key calls to a replica of the key, and falling back when members are unreachable."""

from __future__ import annotations

from kvnode.client import Attempt, KVClient
from kvnode.core.membership import Member, Membership
from kvnode.core.placement import Placement
from kvnode.testing.processes import NodeProcess, metric, wait_for
from tests.conftest import ClusterFactory


def client_puts(node: NodeProcess) -> float:
    """How many Put calls clients have sent this node, from its Prometheus metrics."""
    return metric(node, "kvnode_requests_total", method="Put")


def test_single_key_calls_go_to_the_replica(cluster_factory: ClusterFactory) -> None:
    # RF=1: each key lives on exactly one node, so any other node would have to forward.
    cluster = cluster_factory(size=3, replication_factor=1, metrics=True)
    attempts: list[Attempt] = []
    with KVClient(cluster.endpoints, on_attempt=attempts.append) as kv:
        assert kv.get("warm-up") is None  # the first single-key call starts the membership fetch
        wait_for(lambda: kv.membership is not None, 10, "the client to learn the membership")
        membership = kv.membership
        assert membership is not None and len(membership.members) == 3
        placement = Placement(membership)

        def replica_of(key: str) -> str:
            return membership.address_of(placement.read_replicas(placement.partition(key.encode()))[0])

        def routed(key: str) -> bool:
            attempts.clear()
            kv.get(key)
            return [a.address for a in attempts] == [replica_of(key)]

        # Connections to the members open in the background; once they are up, calls route.
        wait_for(lambda: all(routed(f"probe{i}") for i in range(6)), 10, "calls to be routed")

        before = {n.node_id: client_puts(n) for n in cluster.nodes}
        attempts.clear()
        keys = [f"key{i}" for i in range(60)]
        for key in keys:
            kv.put(key, key)
        assert [a.address for a in attempts] == [replica_of(k) for k in keys]
        expected = {n.node_id: sum(replica_of(k) == n.address for k in keys) for n in cluster.nodes}
        assert all(expected.values()), expected  # the keys spread over all three nodes
        after = {n.node_id: client_puts(n) for n in cluster.nodes}
        assert {n: after[n] - before[n] for n in after} == expected

        assert [e.value if e else None for e in kv.batch_get(keys)] == [k.encode() for k in keys]


def test_unreachable_member_addresses_fall_back_to_the_endpoints(cluster_factory: ClusterFactory) -> None:
    """Members named by addresses the client cannot resolve (pod DNS names seen through a
    port-forward): calls must go to the configured endpoint without ever trying those names."""
    cluster = cluster_factory(size=1)
    endpoint = cluster.endpoints[0]
    bogus = "kv-0.kv-headless.kvstore.invalid:7000"
    node_id = cluster.nodes[0].node_id
    with KVClient(endpoint) as admin:
        current = admin.admin.membership()
        renamed = Membership(
            current.epoch + 1, (Member(node_id, bogus),), current.replication_factor, current.partitions
        )
        assert admin.admin.set_membership(endpoint, renamed) == current.epoch + 1

    attempts: list[Attempt] = []
    with KVClient(endpoint, on_attempt=attempts.append) as kv:
        assert kv.get("warm-up") is None
        wait_for(lambda: kv.membership is not None, 10, "the client to learn the membership")
        assert kv.membership is not None and kv.membership.members[0].address == bogus
        for i in range(30):
            kv.put(f"k{i}", "v")
            entry = kv.get(f"k{i}")
            assert entry is not None and entry.value == b"v"
    assert attempts and all(a.address == endpoint and a.error is None for a in attempts)


def test_route_false_never_asks_for_the_membership(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(size=1)
    attempts: list[Attempt] = []
    with KVClient(cluster.endpoints, route=False, on_attempt=attempts.append) as kv:
        for i in range(5):
            kv.put(f"k{i}", "v")
        assert kv.membership is None
    assert {a.method for a in attempts} == {"Put"}

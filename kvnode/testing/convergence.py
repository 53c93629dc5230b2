"""Do replicas agree? Compares per-partition digests across each partition's replica set."""

from __future__ import annotations

from kvnode.client import Admin
from kvnode.core.membership import Membership
from kvnode.core.placement import Placement
from kvnode.testing.processes import ProcessCluster

EMPTY_DIGEST = bytes(16)


def membership_of(address: str) -> Membership:
    with Admin.connect(timeout=10) as admin:
        return admin.membership(address)


def divergent_partitions(cluster: ProcessCluster) -> dict[int, dict[str, bytes]]:
    """Partitions whose replicas (per the membership of the running nodes) hold different digests.

    A node may keep leftover data for partitions it no longer replicates; only replicas count.
    """
    running = [n for n in cluster.nodes if n.running]
    placement = Placement(membership_of(running[0].address))
    digests = {n.node_id: cluster.digests(n.node_id) for n in running}
    divergent = {}
    for p in range(placement.partitions):
        seen = {r: digests[r].get(p, EMPTY_DIGEST) for r in placement.read_replicas(p) if r in digests}
        if len(set(seen.values())) > 1:
            divergent[p] = seen
    return divergent

"""Leader election on a Lease: of two operators, one acts; the other takes over when it stops, and
a leader that loses the Lease stops acting (issue 15, item 9)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from kvoperator.cli import serve_standby_liveness
from kvoperator.config import OperatorConfig
from kvoperator.kube import KubeClient, login
from kvoperator.leader import LEASES, LeaderElector, lease_namespace, run_as_leader

from kvnode.testing.processes import free_port, wait_for
from tests.operator.apiserver import ApiServerThread
from tests.operator.conftest import NAMESPACE, OperatorThread
from tests.operator.helpers import is_available, wait_status
from tests.operator.kubectl import Kubectl
from tests.operator.sim import ClusterSim
from tests.operator.test_lifecycle import create

LEASE_NS = "kvstore-system"


def elector(client: KubeClient, name: str) -> LeaderElector:
    return LeaderElector(
        client, LEASE_NS, "kvstore-operator", name, lease_duration=2.0, renew_deadline=1.5, retry_period=0.2
    )


async def test_one_candidate_leads_and_a_standby_takes_over_when_it_releases(api: ApiServerThread) -> None:
    a_client, b_client = KubeClient(login()), KubeClient(login())
    a, b = elector(a_client, "a"), elector(b_client, "b")
    try:
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
        stop = threading.Event()
        waiting = asyncio.create_task(b.acquire(stop))
        holding = asyncio.create_task(a.hold())
        # Two lease durations: b must still wait, since a renews.
        await asyncio.sleep(2 * a.lease_duration)
        assert not waiting.done() and not b.is_leader
        holding.cancel()
        await a.release()
        assert await asyncio.wait_for(waiting, timeout=a.retry_period * 5)  # at once, no lease to wait out
        assert (a.is_leader, b.is_leader) == (False, True)
        lease = await b_client.get(LEASES, LEASE_NS, "kvstore-operator")
        assert lease is not None and lease["spec"]["holderIdentity"] == "b"
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        await a_client.close()
        await b_client.close()


async def test_a_stale_write_loses_to_the_other_candidate(api: ApiServerThread) -> None:
    """Both read the free Lease, both write: the resourceVersion lets only one of them win."""
    a_client, b_client = KubeClient(login()), KubeClient(login())
    a, b = elector(a_client, "a"), elector(b_client, "b")
    try:
        assert await a.try_acquire_or_renew()
        await a.release()
        results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
        assert sorted(results) == [False, True], results
    finally:
        await a_client.close()
        await b_client.close()


async def test_a_leader_that_loses_the_lease_stops_its_work(api: ApiServerThread) -> None:
    client = KubeClient(login())
    a = elector(client, "a")
    started, stop = asyncio.Event(), threading.Event()

    async def work(flag: threading.Event) -> None:
        started.set()
        await asyncio.to_thread(flag.wait, 30)

    try:
        running = asyncio.create_task(run_as_leader(a, work, stop))
        await asyncio.wait_for(started.wait(), 10)
        kubectl = Kubectl(api.url)
        kubectl.patch(LEASES, LEASE_NS, "kvstore-operator", {"spec": {"holderIdentity": "intruder"}})
        led = await asyncio.wait_for(running, timeout=a.renew_deadline + 5)
        assert led is False and stop.is_set()  # the work was told to stop; the command exits 1
    finally:
        await client.close()


def test_two_operators_never_act_at_once(
    kubectl: Kubectl, sim: ClusterSim, config: OperatorConfig, tmp_path: Path
) -> None:
    elected = replace(
        config,
        leader_election=True,
        leader_election_namespace=LEASE_NS,
        lease_duration=2.0,
        lease_renew_deadline=1.5,
        lease_retry_period=0.2,
    )
    first = OperatorThread(elected).start()
    second = OperatorThread(replace(elected, metrics_listen="")).start(wait_ready=False)
    try:
        create(kubectl)
        wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available with 3 members")
        assert first.ready and not second.ready  # the standby never started kopf
        assert second.memo is not None and "ctx" not in second.memo
        first.stop()
        wait_for(lambda: second.ready, 20, "the standby to take over")
        stores = second.memo["stores"]
        wait_for(lambda: stores.running(NAMESPACE, "demo"), 20, "the new leader to reconcile the store")
        wait_status(kubectl, "demo", lambda s: is_available(s, 3), "still Available under the new leader")
    finally:
        second.stop()
        first.stop()


def test_lease_timings_must_let_a_leader_stop_before_another_starts() -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        OperatorConfig(lease_duration=10.0, lease_renew_deadline=10.0)
    assert OperatorConfig.from_env({"KVSTORE_OPERATOR_LEADER_ELECTION": "false"}).leader_election is False
    assert lease_namespace(OperatorConfig(leader_election=False, leader_election_namespace="x")) is None
    assert lease_namespace(OperatorConfig(leader_election_namespace="ops")) == "ops"


async def test_a_standby_answers_the_liveness_probe() -> None:
    """A standby runs no kopf, so the command answers the probe itself until it leads; without
    that, the kubelet would restart every standby forever."""
    port = free_port()
    runner = await serve_standby_liveness(f"http://127.0.0.1:{port}/healthz")
    assert runner is not None
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as reply,
        ):
            assert reply.status == 200
    finally:
        await runner.cleanup()

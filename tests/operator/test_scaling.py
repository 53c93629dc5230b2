"""Scaling through the operator with real nodes: data is kept, scale-downs drain the highest
ordinals first and shrink the StatefulSet only after, an unsafe scale-down is refused, and an
operator that restarts in the middle of a scale-down finishes it."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from kvoperator import kube

from kvnode.client.admin import AsyncAdmin
from kvnode.client.reconfig import Reconfigurer
from kvnode.core.membership import MemberState
from kvnode.testing.convergence import membership_of
from kvnode.testing.processes import free_port, wait_for
from tests.operator.conftest import NAMESPACE, OperatorThread
from tests.operator.helpers import (
    condition,
    events,
    is_available,
    missing_keys,
    put_keys,
    reasons,
    store,
    wait_event,
    wait_status,
)
from tests.operator.kubectl import Kubectl
from tests.operator.manifests import kvstore
from tests.operator.sim import ClusterSim

KEYS = [b"key-%04d" % i for i in range(300)]


def create(kubectl: Kubectl, replicas: int) -> int:
    port = free_port()
    kubectl.create(
        kube.KVSTORES,
        NAMESPACE,
        kvstore("demo", NAMESPACE, replicas=replicas, port=port, metrics_port=free_port()),
    )
    return port


def sts_replicas(kubectl: Kubectl) -> int:
    body = kubectl.get(kube.STATEFULSETS, NAMESPACE, "demo")
    assert body is not None
    return int(body["spec"]["replicas"])


def scale(kubectl: Kubectl, replicas: int) -> None:
    kubectl.patch(kube.KVSTORES, NAMESPACE, "demo", {"spec": {"replicas": replicas}})


def test_scale_up_then_down_keeps_every_acknowledged_key(
    kubectl: Kubectl, sim: ClusterSim, operator: OperatorThread
) -> None:
    port = create(kubectl, 3)
    wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available with 3 members")
    acked = put_keys(sim.address("demo", 0, port), KEYS)

    scale(kubectl, 5)
    wait_status(kubectl, "demo", lambda s: is_available(s, 5), "5 active members", timeout=90)
    assert sts_replicas(kubectl) == 5
    wait_event(kubectl, "MemberAdded", 2)
    assert "RebuildStarted" not in reasons(kubectl)  # a new pod holds no partitions: no rebuild
    assert missing_keys(sim.address("demo", 4, port), acked) == []
    more = put_keys(sim.address("demo", 4, port), [b"more-%03d" % i for i in range(100)])

    scale(kubectl, 3)
    wait_status(kubectl, "demo", lambda s: is_available(s, 3), "back to 3 members", timeout=90)
    wait_for(lambda: sts_replicas(kubectl) == 3, 30, "the StatefulSet to shrink to 3")
    wait_for(
        lambda: (
            not {"demo-3", "demo-4"} & {p["metadata"]["name"] for p in kubectl.list(kube.PODS, NAMESPACE)}
        ),
        30,
        "pods 3 and 4 gone",
    )
    assert sim.violations == []  # no pod went away while it was still a member
    wait_event(kubectl, "MemberRemoved", 2)
    wait_event(kubectl, "ScaledDown")
    # The highest ordinal left first.
    removed = [message for reason, message in events(kubectl) if reason == "MemberRemoved"]
    assert removed[0].startswith("demo-4") and removed[1].startswith("demo-3")
    members = membership_of(sim.address("demo", 0, port))
    assert [m.id for m in members.members] == ["demo-0", "demo-1", "demo-2"]
    assert missing_keys(sim.address("demo", 0, port), acked + more) == []
    assert sim.pvc_dir("demo-4").is_dir()  # whenScaled: Retain keeps the volume


def test_a_scale_down_below_the_replication_factor_is_refused(
    kubectl: Kubectl, sim: ClusterSim, operator: OperatorThread
) -> None:
    port = create(kubectl, 3)
    wait_status(kubectl, "demo", lambda s: is_available(s, 3), "Available with 3 members")
    scale(kubectl, 2)
    body = wait_status(
        kubectl,
        "demo",
        lambda s: any(
            c["type"] == "Degraded" and c["reason"] == "ScaleDownRefused" for c in s.get("conditions", [])
        ),
        "the scale-down refused",
        timeout=20,
    )
    degraded = condition(body, "Degraded")
    assert degraded["status"] == "True"
    assert "below replicationFactor=3" in degraded["message"]
    wait_event(kubectl, "ScaleDownRefused")
    assert sts_replicas(kubectl) == 3
    assert len(membership_of(sim.address("demo", 0, port)).members) == 3
    assert condition(body, "Available")["status"] == "True"
    scale(kubectl, 3)
    wait_status(
        kubectl,
        "demo",
        lambda s: is_available(s, 3) and not any(c["reason"] == "ScaleDownRefused" for c in s["conditions"]),
        "the refusal cleared",
    )


def test_an_operator_restart_in_the_middle_of_a_scale_down_resumes_it(
    kubectl: Kubectl, sim: ClusterSim, operator: OperatorThread
) -> None:
    port = create(kubectl, 4)
    wait_status(kubectl, "demo", lambda s: is_available(s, 4), "Available with 4 members", timeout=60)
    acked = put_keys(sim.address("demo", 0, port), KEYS)

    # The operator dies after spec.replicas went to 3, having installed the LEAVING epoch for
    # demo-3 and started its decommission: exactly what Reconfigurer.remove does first.
    operator.stop()
    scale(kubectl, 3)
    seeds = [sim.address("demo", i, port) for i in range(4)]

    async def begin_removal() -> int:
        async with AsyncAdmin.connect() as admin:
            reconfig = Reconfigurer(admin, seeds)
            current = await reconfig.current()
            leaving = replace(
                current,
                epoch=current.epoch + 1,
                members=tuple(
                    replace(m, state=MemberState.LEAVING) if m.id == "demo-3" else m for m in current.members
                ),
            )
            await reconfig.install(leaving)
            await admin.decommission(seeds[3])
        return leaving.epoch

    leaving_epoch = asyncio.run(begin_removal())
    assert sts_replicas(kubectl) == 4

    operator.start()  # a new operator process
    wait_status(
        kubectl, "demo", lambda s: is_available(s, 3), "3 members after the resumed scale-down", timeout=60
    )
    wait_for(lambda: sts_replicas(kubectl) == 3, 30, "the StatefulSet to shrink")
    final = membership_of(seeds[0])
    assert [m.id for m in final.members] == ["demo-0", "demo-1", "demo-2"]
    assert final.epoch == leaving_epoch + 1  # the removal finished; no change was made twice
    wait_event(kubectl, "MemberRemoved")
    assert "MemberAdded" not in reasons(kubectl)
    assert sim.violations == []
    assert missing_keys(seeds[0], acked) == []
    assert store(kubectl, "demo")["status"]["membershipEpoch"] == leaving_epoch + 1

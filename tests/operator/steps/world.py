"""A store world for the step tests: a KVStore, its pods and its nodes in the fakes (fakes.py),
and the operator's context over them, with passes run at the times a test gives."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from kvoperator import kube, names
from kvoperator.config import AddressMode, OperatorConfig
from kvoperator.context import OperatorContext
from kvoperator.events import Events
from kvoperator.kube import Body
from kvoperator.metrics import OperatorMetrics
from kvoperator.observation import observe
from kvoperator.operation import Operation, OperationSlot
from kvoperator.passes import Pass
from kvoperator.steps import status as status_step

from kvnode.api.v1 import admin_pb2
from kvnode.core.membership import Member, Membership, MemberState
from tests.operator.steps.fakes import FakeAdmin, FakeKube, FakeNode, RecordedEvents, merge_patch

T0 = datetime.datetime(2025, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)
NS = "ns"
STORE = "kv"
PORT = 7000
CONFIG = OperatorConfig(
    address_mode=AddressMode.POD_IP,
    backup_path="/backups",
    restore_path="/restore",
    unhealthy_pod_threshold=60.0,
    stuck_terminating_grace=300.0,
)
StepRun = Callable[[Pass], Awaitable[None]]


def address(ordinal: int) -> str:
    return f"10.0.0.{ordinal + 1}:{PORT}"


def store_body(**spec: Any) -> Body:
    return {
        "apiVersion": "kvstore.dev/v1alpha1",
        "kind": "KVStore",
        "metadata": {"name": STORE, "namespace": NS, "uid": "store-uid"},
        "spec": {"replicas": 3, "port": PORT, "partitions": 16, **spec},
        "status": {},
    }


def pod_body(
    ordinal: int, *, ready: bool = True, running: bool = True, restarts: int = 0, node: str = "node-a"
) -> Body:
    name = names.pod(STORE, ordinal)
    state = {"running": {}} if running else {"waiting": {"reason": "CrashLoopBackOff"}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": f"{name}-uid", "labels": names.labels(STORE)},
        "spec": {"nodeName": node},
        "status": {
            "phase": "Running",
            "podIP": address(ordinal).split(":")[0],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "kvnode", "state": state, "restartCount": restarts}],
        },
    }


def backup_of_old_store(phase: str = "Succeeded") -> Body:
    """The KVBackup ``snap`` of a store ``old`` (gone): backup id ``snap-id`` in its folder ``old``
    of the claim ``old-backups``."""
    status = {"phase": phase, "verified": phase == "Succeeded", "backupId": "snap-id"}
    return {
        "metadata": {"name": "snap", "namespace": NS},
        "spec": {"storeName": "old"},
        "status": {**status, "claimName": "old-backups", "directory": "old"},
    }


def statefulset_body(replicas: int) -> Body:
    """A StatefulSet of the store as an earlier pass left it (its template is not the point)."""
    owner = {"apiVersion": "kvstore.dev/v1alpha1", "kind": "KVStore", "name": STORE, "uid": "store-uid"}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": STORE, "namespace": NS, "ownerReferences": [{**owner, "controller": True}]},
        "spec": {"replicas": replicas},
    }


def membership(
    ordinals: Sequence[int], epoch: int = 1, states: Mapping[int, MemberState] | None = None
) -> Membership:
    """The members ``kv-<ordinal>`` at their pods' addresses, ACTIVE unless ``states`` says."""
    members = tuple(
        Member(names.pod(STORE, i), address(i), (states or {}).get(i, MemberState.ACTIVE)) for i in ordinals
    )
    return Membership(epoch, members, 3, 16)


class World:
    """A store, its pods and its nodes in the fakes, and the operator's context over them.

    ``operations`` is the store's background-operation slot, as a reconciler holds it: a new
    :class:`World` over the same fakes (``restarted``) is an operator that restarted.
    """

    def __init__(self, kube_api: FakeKube | None = None, admin: FakeAdmin | None = None) -> None:
        self.kube = kube_api or FakeKube(T0)
        self.admin = admin or FakeAdmin()
        self.events = RecordedEvents()
        self.metrics = OperatorMetrics()
        self.ctx = OperatorContext(CONFIG, self.kube, self.admin, self.metrics, Events(self.events))
        self.wakes = 0
        self.operations = OperationSlot(f"{NS}/{STORE}", self._woken)

    def _woken(self) -> None:
        self.wakes += 1

    def operation(self) -> Operation | None:
        """The store's operation, running or finished and not yet collected."""
        return self.operations.current

    def restarted(self) -> World:
        """The operator after a restart: the same cluster and nodes, nothing in memory."""
        return World(self.kube, self.admin)

    def store(self, **spec: Any) -> Body:
        return self.kube.put(kube.KVSTORES, store_body(**spec))

    def edit(self, **spec: Any) -> None:
        """Change the store's spec as ``kubectl patch`` would: its status stays."""
        body = self.kube.objects[kube.KVSTORES, NS, STORE]
        body["spec"] = merge_patch(body["spec"], spec)
        body["metadata"]["generation"] += 1

    def pods(self, count: int, *, epoch: int = 1, **pod: Any) -> None:
        """``count`` pods whose nodes serve, each holding a membership of all of them (at ``epoch``;
        at epoch 0 their seed membership)."""
        for i in range(count):
            self.pod(i, **pod)
        self.admin.set_membership(membership(range(count), epoch))

    def pod(self, ordinal: int, **pod: Any) -> None:
        self.kube.put(kube.PODS, pod_body(ordinal, **pod))
        self.admin.nodes[address(ordinal)] = FakeNode(
            status=admin_pb2.StatusResponse(node_id=names.pod(STORE, ordinal))
        )

    def node(self, ordinal: int) -> FakeNode:
        return self.admin.nodes[address(ordinal)]

    def status(self) -> dict[str, Any]:
        body = self.kube.object(kube.KVSTORES, NS, STORE)
        assert body is not None
        return dict(body.get("status") or {})

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, {"namespace": NS, "store": STORE, **labels})
        return value or 0.0

    async def new_pass(self, now: datetime.datetime = T0) -> Pass:
        observed = await observe(self.kube, self.admin, CONFIG, NS, STORE)
        assert observed is not None
        current = Pass.start(self.ctx, observed, self.operations)
        current.now = now
        return current

    async def run(self, *steps: StepRun, now: datetime.datetime = T0, save: bool = False) -> Pass:
        """A pass of ``steps`` at ``now``; ``save`` ends it with the status step, which writes the
        memory to the status (as every full pass does last)."""
        current = await self.new_pass(now)
        for step in steps:
            await step(current)
        if save:
            await status_step.run(current)
        return current

    async def settle(self) -> None:
        """Wait for the store's background operation to end, however it ends (the next pass
        collects it)."""
        op = self.operations.current
        assert op is not None, "no operation was started"
        done, _ = await asyncio.wait({op.task}, timeout=5)
        assert done, f"{op.description} did not end"


async def hold(op: Operation) -> None:
    """Work that runs until it is cancelled: an operation that keeps the store busy."""
    await asyncio.Event().wait()


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)

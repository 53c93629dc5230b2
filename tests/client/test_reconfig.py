"""Membership changes through the Reconfigurer, against a fake Admin that models the nodes: each
holds a membership (refusing what a node would refuse) and runs joins and decommissions that take
a few polls. A change goes through two epochs around its transfer, resumes where a crash left it,
and is refused when it would overlap another change or drop below the replication factor."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import pytest

from kvnode.api.v1 import admin_pb2, types_pb2
from kvnode.client import reconfig
from kvnode.client.admin import AsyncAdmin
from kvnode.client.reconfig import Reconfigurer
from kvnode.core.errors import FailedPrecondition, Unavailable
from kvnode.core.membership import Member, Membership, MemberState

RUNNING = admin_pb2.TRANSFER_STATE_RUNNING
DONE = admin_pb2.TRANSFER_STATE_DONE
FAILED = admin_pb2.TRANSFER_STATE_FAILED
PARTITIONS = 64


def address(node_id: str) -> str:
    return f"{node_id}.test:7000"


def members(*ids: str, epoch: int = 1, rf: int = 3, **states: MemberState) -> Membership:
    return Membership(
        epoch,
        tuple(Member(i, address(i), states.get(i, MemberState.ACTIVE)) for i in ids),
        rf,
        PARTITIONS,
    )


@dataclass(eq=False)
class FakeNode:
    """One node as its Admin service behaves: it keeps what it installed across a crash, and
    forgets its transfer's progress."""

    id: str
    membership: Membership
    installed: list[Membership] = field(default_factory=list)
    down: bool = False
    crash_on: str = ""
    """The Admin call at which the node crashes (it answers none until :meth:`restart`)."""
    transfer: admin_pb2.TransferStatus | None = None
    transfer_polls: int = 2
    transfer_error: str = ""
    rebuild_polls: int = 0

    @property
    def address(self) -> str:
        return address(self.id)

    def restart(self) -> None:
        self.down = False
        self.transfer = None


class FakeAdmin:
    """The Admin calls the Reconfigurer makes, with :class:`AsyncAdmin`'s signatures, each
    answered by the node at its address. ``events`` is what happened, in order."""

    def __init__(self, nodes: Iterable[FakeNode]) -> None:
        self.nodes = {n.address: n for n in nodes}
        self.events: list[tuple[str, str, int]] = []

    def node(self, node_id: str) -> FakeNode:
        return self.nodes[address(node_id)]

    def installs(self) -> list[tuple[str, int]]:
        return [(a, e) for what, a, e in self.events if what == "install"]

    def _reach(self, address: str | None, call: str) -> FakeNode:
        node = self.nodes.get(address or "")
        if node is None or node.down:
            raise Unavailable(f"peer at {address}: connection refused")
        if node.crash_on == call:
            node.crash_on, node.down = "", True
            raise Unavailable(f"peer at {address}: connection reset")
        return node

    async def membership(self, address: str | None = None, *, timeout: float | None = None) -> Membership:
        return self._reach(address, "membership").membership

    async def set_membership(
        self, address: str, membership: Membership | types_pb2.Membership, *, timeout: float | None = None
    ) -> int:
        offered = membership if isinstance(membership, Membership) else Membership.from_proto(membership)
        node = self._reach(address, "set_membership")
        held = node.membership
        if offered.epoch < held.epoch:
            raise FailedPrecondition(
                f"stale membership epoch {offered.epoch}: this node already has epoch {held.epoch}"
            )
        if offered.epoch == held.epoch and not offered.same_config(held):
            raise FailedPrecondition(
                f"membership epoch {offered.epoch} is already installed with different members"
            )
        if offered.epoch > held.epoch:
            node.membership = offered
            node.installed.append(offered)
            self.events.append(("install", address, offered.epoch))
        return node.membership.epoch

    async def join(self, address: str, *, timeout: float | None = None) -> admin_pb2.TransferStatus:
        return self._transfer(address, "join", MemberState.JOINING)

    async def decommission(self, address: str, *, timeout: float | None = None) -> admin_pb2.TransferStatus:
        return self._transfer(address, "decommission", MemberState.LEAVING)

    def _transfer(self, address: str, kind: str, wanted: MemberState) -> admin_pb2.TransferStatus:
        """What TransferManager.start answers: the transfer under way (one more partition done
        each poll), a finished one for this epoch, or a new one if the node is in ``wanted``."""
        node = self._reach(address, kind)
        if node.rebuild_polls:
            node.rebuild_polls -= 1
            return admin_pb2.TransferStatus(kind="rebuild", state=RUNNING)
        epoch = node.membership.epoch
        status = node.transfer
        if status is not None and status.state == RUNNING:
            status.partitions_done += 1
            if status.partitions_done >= status.partitions_total:
                status.state = DONE
                self.events.append((f"{status.kind} done", address, epoch))
        elif status is None or not (status.kind == kind and status.epoch == epoch and status.state == DONE):
            member = node.membership.member(node.id)
            if member is None or member.state != wanted:
                raise FailedPrecondition(f"cannot {kind}: node {node.id} is not {wanted.name}")
            status = node.transfer = admin_pb2.TransferStatus(
                kind=kind,
                state=FAILED if node.transfer_error else RUNNING,
                epoch=epoch,
                partitions_total=node.transfer_polls,
                error=node.transfer_error,
            )
        reply = admin_pb2.TransferStatus()
        reply.CopyFrom(status)
        return reply


def cluster(held: Membership, *newcomers: str) -> FakeAdmin:
    """The members of ``held`` holding it, and newcomers already running on their own flags."""
    nodes = [FakeNode(m.id, held) for m in held.members]
    nodes += [FakeNode(n, members(n, epoch=0, rf=held.replication_factor)) for n in newcomers]
    return FakeAdmin(nodes)


def reconfigurer(admin: FakeAdmin, seeds: Iterable[str] = ("n1", "n2", "n3")) -> Reconfigurer:
    """Reconfigurer's parameter is typed AsyncAdmin although it needs only these four calls."""
    return Reconfigurer(admin, [address(s) for s in seeds], transfer_timeout=30.0)


@pytest.fixture(autouse=True)
def no_poll_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Transfers finish in a few polls here; waiting between them would only slow the tests."""
    monkeypatch.setattr(reconfig, "POLL_SECONDS", 0.0)


def test_the_fake_admin_has_the_signatures_of_the_real_one() -> None:
    for name in ("membership", "set_membership", "join", "decommission"):
        assert inspect.signature(getattr(FakeAdmin, name)) == inspect.signature(getattr(AsyncAdmin, name)), (
            name
        )


async def test_add_goes_through_joining_and_active_around_the_join() -> None:
    admin = cluster(members("n1", "n2", "n3"), "n4")
    admin.node("n4").rebuild_polls = 2  # a transfer of another kind runs first: waited out

    final = await reconfigurer(admin).add("n4", address("n4"))

    assert final == members("n1", "n2", "n3", "n4", epoch=3)
    for node in admin.nodes.values():
        assert [m.epoch for m in node.installed] == [2, 3], node.id
        assert node.installed[0].member("n4") == Member("n4", address("n4"), MemberState.JOINING)
    done = admin.events.index(("join done", address("n4"), 2))
    assert all(admin.events.index(("install", a, 3)) > done for a in admin.nodes)


async def test_remove_goes_through_leaving_and_drops_the_member_after_the_drain() -> None:
    admin = cluster(members("n1", "n2", "n3", "n4"))

    final = await reconfigurer(admin).remove("n4")

    assert final == members("n1", "n2", "n3", epoch=3)
    assert admin.node("n4").installed[0] == members("n1", "n2", "n3", "n4", epoch=2, n4=MemberState.LEAVING)
    assert admin.node("n4").membership == final  # told too, so that it knows it is out
    done = admin.events.index(("decommission done", address("n4"), 2))
    assert all(admin.events.index(("install", a, 3)) > done for a in admin.nodes)


async def test_a_cluster_started_from_flags_gets_a_first_epoch_before_a_change() -> None:
    admin = cluster(members("n1", "n2", "n3", epoch=0), "n4")
    assert (await reconfigurer(admin).add("n4", address("n4"))).epoch == 3
    assert [m.epoch for m in admin.node("n1").installed] == [1, 2, 3]


async def test_changes_already_made_are_not_made_again() -> None:
    admin = cluster(members("n1", "n2", "n3"))
    reconfig = reconfigurer(admin)
    assert await reconfig.add("n2", address("n2")) == members("n1", "n2", "n3")
    assert await reconfig.remove("n9") == members("n1", "n2", "n3")
    assert admin.events == []


async def test_an_add_that_crashed_during_its_join_resumes() -> None:
    admin = cluster(members("n1", "n2", "n3"), "n4")
    admin.node("n4").crash_on = "join"
    with pytest.raises(Unavailable, match="connection reset"):
        await reconfigurer(admin).add("n4", address("n4"))
    assert all(n.membership.epoch == 2 for n in admin.nodes.values())

    admin.node("n4").restart()
    final = await reconfigurer(admin).add("n4", address("n4"))

    assert final == members("n1", "n2", "n3", "n4", epoch=3)
    assert max(epoch for _, epoch in admin.installs()) == 3  # the same change finished, not a new one
    assert ("join done", address("n4"), 2) in admin.events


async def test_an_add_whose_install_missed_a_member_names_it_and_resumes() -> None:
    admin = cluster(members("n1", "n2", "n3"), "n4")
    admin.node("n3").down = True
    with pytest.raises(
        Unavailable, match=re.escape(f"membership epoch 2 not installed everywhere: peer at {address('n3')}")
    ):
        await reconfigurer(admin).add("n4", address("n4"))
    assert admin.node("n3").membership.epoch == 1 and admin.node("n1").membership.epoch == 2

    admin.node("n3").down = False
    await reconfigurer(admin).add("n4", address("n4"))
    assert [m.epoch for m in admin.node("n3").installed] == [2, 3]


async def test_a_remove_whose_drain_failed_reports_it_and_resumes() -> None:
    admin = cluster(members("n1", "n2", "n3", "n4"))
    admin.node("n4").transfer_error = "verification failed: n2 lacks key b'k' of partition 7"
    with pytest.raises(
        Unavailable, match=f"decommission on {re.escape(address('n4'))} failed: .*partition 7"
    ):
        await reconfigurer(admin).remove("n4")

    admin.node("n4").transfer_error = ""
    assert await reconfigurer(admin).remove("n4") == members("n1", "n2", "n3", epoch=3)


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ("add n5", r"another membership change is under way \(n4\)"),
        ("remove n2", r"another membership change is under way \(n4\)"),
        ("remove n4", "n4 is still joining"),
    ],
)
async def test_a_change_during_another_is_refused(change: str, refusal: str) -> None:
    admin = cluster(members("n1", "n2", "n3", "n4", epoch=2, n4=MemberState.JOINING), "n5")
    reconfig = reconfigurer(admin)
    verb, member_id = change.split()
    with pytest.raises(FailedPrecondition, match=refusal):
        if verb == "add":
            await reconfig.add(member_id, address(member_id))
        else:
            await reconfig.remove(member_id)
    assert admin.events == []


async def test_adding_back_a_leaving_member_is_refused() -> None:
    admin = cluster(members("n1", "n2", "n3", "n4", epoch=2, n4=MemberState.LEAVING))
    with pytest.raises(FailedPrecondition, match="n4 is leaving"):
        await reconfigurer(admin).add("n4", address("n4"))


async def test_a_removal_below_the_replication_factor_is_refused() -> None:
    admin = cluster(members("n1", "n2", "n3"))
    with pytest.raises(
        FailedPrecondition, match="would leave 2 members, fewer than the replication factor 3"
    ):
        await reconfigurer(admin).remove("n3")
    assert admin.events == []


async def test_install_names_the_node_that_failed_and_whether_it_refused() -> None:
    admin = cluster(members("n1", "n2", "n3"))
    reconfig = reconfigurer(admin)
    second = replace(members("n1", "n2", "n3"), epoch=2)

    admin.node("n2").down = True
    with pytest.raises(Unavailable) as down:
        await reconfig.install(second)
    assert address("n2") in down.value.message
    assert address("n1") not in down.value.message and address("n3") not in down.value.message

    admin.node("n2").down = False
    admin.node("n3").membership = replace(second, epoch=5)
    with pytest.raises(FailedPrecondition, match=rf"{re.escape(address('n3'))}: stale membership epoch 2"):
        await reconfig.install(second)


async def test_a_transfer_that_never_finishes_times_out() -> None:
    admin = cluster(members("n1", "n2", "n3"), "n4")
    admin.node("n4").transfer_polls = 1 << 30
    reconfig = Reconfigurer(admin, [address("n1")], transfer_timeout=0.05)
    with pytest.raises(Unavailable, match=f"join on {re.escape(address('n4'))} did not finish"):
        await reconfig.add("n4", address("n4"))

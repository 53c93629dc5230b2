"""The topology: epochs only go up, a membership is persisted before it is used, peers' newer
memberships are adopted, and installing an epoch drains the requests planned before it."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from kvnode.api.v1 import types_pb2
from kvnode.cluster.topology import Topology
from kvnode.core.errors import FailedPrecondition, Unavailable
from kvnode.core.membership import Membership
from kvnode.testing.processes import wait_until
from tests.cluster.harness import membership

WAIT = 20.0
FIRST = membership(["n1", "n2", "n3"], epoch=1)
SECOND = membership(["n1", "n2", "n3", "n4"], epoch=2, joining=["n4"])


class Persisted:
    """The persist callback: keeps each membership with the epoch in use while it was persisted."""

    def __init__(self) -> None:
        self.memberships: list[Membership] = []
        self.epoch_in_use: list[int] = []
        self.topology: Topology | None = None
        self.fail = False

    async def __call__(self, m: Membership) -> None:
        if self.fail:
            raise OSError("disk gone")
        assert self.topology is not None
        self.memberships.append(m)
        self.epoch_in_use.append(self.topology.epoch)


def topology(members: Membership = FIRST) -> tuple[Topology, Persisted]:
    persisted = Persisted()
    topo = persisted.topology = Topology("n1", members, persisted)
    return topo, persisted


class Source:
    """A peer asked for its membership: it answers with one, or fails."""

    def __init__(self, held: Membership | None) -> None:
        self.held = held

    async def membership(self) -> types_pb2.Membership:
        if self.held is None:
            raise Unavailable("peer down")
        return self.held.to_proto()


async def test_a_newer_epoch_is_persisted_before_it_is_used_and_announced() -> None:
    topo, persisted = topology()
    announced: list[Membership] = []
    topo.on_change(announced.append)
    assert await topo.install(SECOND) is True
    assert persisted.memberships == [SECOND] and persisted.epoch_in_use == [1]
    assert topo.membership == SECOND and topo.placement.membership == SECOND
    assert announced == [SECOND]


async def test_installing_the_held_epoch_again_changes_nothing() -> None:
    topo, persisted = topology()
    assert await topo.install(FIRST) is False
    assert persisted.memberships == []


@pytest.mark.parametrize(
    ("offered", "refusal"),
    [
        (replace(FIRST, replication_factor=2), "epoch 1 is already installed with different members"),
        (replace(FIRST, epoch=0), "stale membership epoch 0: this node already has epoch 1"),
        (replace(SECOND, partitions=32), "the partition count cannot change"),
    ],
    ids=["same-epoch-other-config", "older-epoch", "other-partition-count"],
)
async def test_a_membership_that_cannot_follow_is_refused(offered: Membership, refusal: str) -> None:
    topo, persisted = topology()
    with pytest.raises(FailedPrecondition, match=refusal):
        await topo.install(offered)
    assert topo.membership == FIRST and persisted.memberships == []


async def test_a_membership_that_cannot_be_persisted_is_not_used() -> None:
    topo, persisted = topology()
    persisted.fail = True
    with pytest.raises(OSError, match="disk gone"):
        await topo.install(SECOND)
    assert topo.membership == FIRST


async def test_adopt_takes_only_a_newer_valid_membership_from_a_peer() -> None:
    topo, persisted = topology()
    await topo.adopt(replace(FIRST, epoch=0).to_proto())
    await topo.adopt(replace(SECOND, partitions=32).to_proto())  # invalid here: ignored, not raised
    assert topo.membership == FIRST and persisted.memberships == []
    await topo.adopt(SECOND.to_proto())
    assert topo.membership == SECOND


async def test_catch_up_adopts_the_newest_membership_any_peer_answers_with() -> None:
    topo, _ = topology()
    newest = replace(SECOND, epoch=5)
    assert await topo.catch_up([Source(replace(SECOND, epoch=3)), Source(None), Source(newest)]) is True
    assert topo.membership == newest


async def test_catch_up_reports_when_no_peer_answers() -> None:
    topo, _ = topology()
    assert await topo.catch_up([Source(None), Source(None)]) is False
    assert topo.membership == FIRST
    assert await topo.catch_up([]) is True  # nobody to ask: nothing to wait for


async def test_installing_an_epoch_waits_for_the_requests_planned_before_it() -> None:
    topo, _ = topology()
    with topo.request() as planned:
        assert planned.membership == FIRST
        install = asyncio.create_task(topo.install(SECOND, drain_seconds=WAIT))
        await wait_until(lambda: topo.epoch == 2, WAIT, "epoch 2 in use")
        with topo.request() as later:  # planned on the new epoch: not waited for
            assert later.membership == SECOND
            assert not install.done()
        assert not install.done()
    assert await asyncio.wait_for(install, WAIT) is True


async def test_draining_gives_up_after_its_time() -> None:
    topo, _ = topology()
    with topo.request():
        assert await asyncio.wait_for(topo.install(SECOND, drain_seconds=0.05), WAIT) is True

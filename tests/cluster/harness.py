"""This node's real parts for the cluster unit tests, with fake peers around them.

The node under test is always real where it is cheap: an LMDB :class:`Storage` in the test's
folder, a :class:`GroupCommitter` with its writer process, :class:`LocalReplica`, :class:`Topology`
(persisting through the committer), :class:`Roster`, :class:`HybridClock` and :class:`NodeMetrics`.
Only the other members are fakes (:mod:`tests.cluster.fakes`), so what a test asserts is what the
code promises against replicas that keep the same rules.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kvnode.cluster.checks import RecordCheck
from kvnode.cluster.clock import HybridClock
from kvnode.cluster.local import LocalReplica
from kvnode.cluster.roster import Roster
from kvnode.cluster.topology import Topology
from kvnode.core.membership import Member, Membership, MemberState
from kvnode.core.records import Record, Version
from kvnode.metrics import NodeMetrics
from kvnode.storage.engine import Storage
from kvnode.storage.groupcommit import GroupCommitter
from kvnode.storage.ops import ApplyRecords, PutMeta
from kvnode.storage.schema import Meta
from tests.cluster.fakes import FakePeer

PARTITIONS = 16
SELF = "n1"


class WallClock:
    """A wall clock a test moves by hand (milliseconds), for what depends on age."""

    def __init__(self, ms: int = 1_700_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def membership(
    ids: Iterable[str],
    *,
    rf: int = 3,
    epoch: int = 1,
    joining: Iterable[str] = (),
    leaving: Iterable[str] = (),
    partitions: int = PARTITIONS,
) -> Membership:
    """Members with made-up addresses, ACTIVE unless named as joining or leaving."""
    joining, leaving = set(joining), set(leaving)

    def state(member_id: str) -> MemberState:
        if member_id in joining:
            return MemberState.JOINING
        return MemberState.LEAVING if member_id in leaving else MemberState.ACTIVE

    members = tuple(Member(i, f"{i}.test:7000", state(i)) for i in ids)
    return Membership(epoch, members, rf, partitions)


def record(
    key: bytes | str, value: bytes | str = b"v", hlc: int = 1, writer: str = "w", *, tomb: bool = False
) -> Record:
    """A record with an explicit version."""
    key = key.encode() if isinstance(key, str) else key
    value = value.encode() if isinstance(value, str) else value
    return Record(key, b"" if tomb else value, Version(hlc, writer), tomb)


@contextlib.asynccontextmanager
async def open_store(
    path: Path, partitions: int = PARTITIONS
) -> AsyncIterator[tuple[Storage, GroupCommitter]]:
    """A real store and its committer (with its writer process), closed on the way out."""
    storage = Storage(path, partitions=partitions, map_size=1 << 22)
    try:
        committer = GroupCommitter(storage)
        committer.start(asyncio.get_running_loop())
        try:
            yield storage, committer
        finally:
            await committer.close()
    finally:
        storage.close()


@dataclass(eq=False)
class Node:
    """The node under test: its real parts and the fake peers its roster links to."""

    id: str
    storage: Storage
    committer: GroupCommitter
    local: LocalReplica
    topology: Topology
    roster: Roster
    clock: HybridClock
    metrics: NodeMetrics
    peers: dict[str, FakePeer]

    def peer(self, member_id: str) -> FakePeer:
        return self.peers[member_id]

    async def store(self, *records: Record) -> None:
        """Write records into this node's own store, with their versions."""
        await self.committer.submit(ApplyRecords.of((r, False) for r in records))

    def key_where(self, wanted: Callable[[tuple[str, ...], tuple[str, ...]], bool]) -> bytes:
        """The first key ``k<n>`` whose partition's (old, new) replica sets are ``wanted``."""
        placement = self.topology.placement
        for n in range(100_000):
            key = f"k{n}".encode()
            if wanted(*placement.write_sets(placement.partition(key))):
                return key
        raise AssertionError("no key has a partition with the wanted replica sets")

    def metric(self, name: str, **labels: str) -> float:
        """A sample of this node's metrics; 0 when the series does not exist yet."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def running_node(
    folder: Path, members: Membership, *, wall: WallClock | None = None
) -> AsyncIterator[Node]:
    """This node with real parts in ``folder`` (reopened if it exists) and a fake for each other
    member. On the way out every stalled peer is released and allowed to answer."""
    node_id = SELF
    async with open_store(folder / node_id, members.partitions) as (storage, committer):

        async def persist(m: Membership) -> None:
            await committer.submit(PutMeta.of(Meta.MEMBERSHIP, m))

        topology = Topology(node_id, members, persist)
        peers: dict[str, FakePeer] = {}

        def link(member_id: str, address: str) -> FakePeer:
            peer = peers.get(member_id)
            if peer is None or peer.address != address:
                peer = peers[member_id] = FakePeer(
                    member_id,
                    address,
                    partitions=members.partitions,
                    held=topology.membership,
                    epoch=lambda: topology.epoch,
                    adopt=topology.adopt,
                )
            return peer

        clock = HybridClock(wall_ms=wall)
        local = LocalReplica(node_id, storage, committer, RecordCheck(clock, max_value_bytes=1 << 20))
        roster = Roster(local, link)
        roster.sync(members)
        topology.on_change(roster.sync)
        node = Node(
            node_id, storage, committer, local, topology, roster, clock, NodeMetrics(node_id, "test"), peers
        )
        try:
            yield node
        finally:
            for peer in peers.values():
                peer.recover()
            await asyncio.gather(*(peer.settled() for peer in peers.values()))
            await roster.close()

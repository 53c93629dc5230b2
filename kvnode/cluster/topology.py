"""The membership this node acts on, and the rules for replacing it.

Epochs only go up. A membership arrives from the operator (Admin.SetMembership) or from a peer that
answered with a newer one; either way it is persisted before it is used, so a restart never falls
back to an older view. Coordinated requests register under the epoch they were planned with, so
that installing a new epoch can wait until no request still runs on the old placement.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from kvnode.api.v1 import types_pb2
from kvnode.core.errors import FailedPrecondition
from kvnode.core.membership import Membership
from kvnode.core.placement import Placement

log = logging.getLogger(__name__)

Persist = Callable[[Membership], Awaitable[None]]


class MembershipSource(Protocol):
    """A peer that can be asked for the membership it holds."""

    async def membership(self) -> types_pb2.Membership: ...


class Topology:
    """The membership and placement every request is planned on, and the only place that changes
    them: it persists a new membership before using it and tells its listeners."""

    def __init__(
        self,
        node_id: str,
        membership: Membership,
        persist: Persist,
        peers: Callable[[], Sequence[MembershipSource]] = tuple,
    ) -> None:
        self.node_id = node_id
        self._membership = membership
        self._placement = Placement(membership)
        self._persist = persist
        self._peers = peers
        self._lock = asyncio.Lock()
        self._inflight: Counter[int] = Counter()
        self._listeners: list[Callable[[Membership], None]] = []

    @property
    def membership(self) -> Membership:
        return self._membership

    @property
    def placement(self) -> Placement:
        return self._placement

    @property
    def epoch(self) -> int:
        return self._membership.epoch

    def on_change(self, listener: Callable[[Membership], None]) -> None:
        self._listeners.append(listener)

    async def install(self, membership: Membership, *, drain_seconds: float = 0.0) -> bool:
        """Adopt ``membership`` if it is newer. Returns True when it was installed or already held.

        The same epoch with a different configuration, or an older epoch, is refused. With a
        ``drain_seconds``, waits that long for requests planned under older epochs to finish.
        """
        async with self._lock:
            current = self._membership
            if membership.epoch < current.epoch:
                raise FailedPrecondition(
                    f"stale membership epoch {membership.epoch}: this node already has epoch {current.epoch}"
                )
            if membership.epoch == current.epoch:
                if not membership.same_config(current):
                    raise FailedPrecondition(
                        f"membership epoch {membership.epoch} is already installed with different members; "
                        "use a higher epoch for a new configuration"
                    )
                installed = False
            else:
                if membership.partitions != current.partitions:
                    raise FailedPrecondition(
                        f"membership has {membership.partitions} partitions but this node's data is laid "
                        f"out in {current.partitions}; the partition count cannot change"
                    )
                await self._persist(membership)
                self._membership = membership
                self._placement = Placement(membership)
                installed = True
                log.info(
                    "installed membership epoch %d: %s",
                    membership.epoch,
                    ", ".join(f"{m.id}({m.state.name.lower()})" for m in membership.members),
                )
                for listener in self._listeners:
                    listener(membership)
        if drain_seconds:
            await self._wait_drained(membership.epoch, drain_seconds)
        return installed

    async def change(self, membership: Membership, *, drain_seconds: float = 0.0) -> bool:
        """Install ``membership`` as the operator or kvctl asks (Admin.SetMembership): only the
        same epoch again (a retry) or the next one, by a step the reconfiguration protocol takes
        (:meth:`Membership.successor_problem`). Peers' newer memberships go through :meth:`adopt`,
        which may skip epochs that a node missed while it was down."""
        if membership.epoch > self._membership.epoch + 1:
            # A node that missed epochs (a newcomer that has not heard of the cluster's latest, a
            # node that was down) first learns them from its peers; a made-up epoch stays refused.
            await self.catch_up(self._peers())
        current = self._membership
        if membership.epoch > current.epoch:
            problem = current.successor_problem(membership)
            if problem is not None:
                raise FailedPrecondition(
                    f"membership epoch {membership.epoch} refused: {problem} "
                    f"(this node holds epoch {current.epoch})"
                )
        return await self.install(membership, drain_seconds=drain_seconds)

    async def adopt(self, msg: types_pb2.Membership) -> None:
        """Take a newer membership reported by a peer; ignore anything not newer."""
        if msg.epoch <= self.epoch:
            return
        try:
            await self.install(Membership.from_proto(msg))
        except (FailedPrecondition, ValueError) as exc:
            log.warning("ignoring membership epoch %d from a peer: %s", msg.epoch, exc)

    async def catch_up(self, peers: Sequence[MembershipSource]) -> bool:
        """Adopt the newest membership any of ``peers`` holds, asked at once. True if some peer
        answered (or there is none to ask)."""
        if not peers:
            return True
        results = await asyncio.gather(*(p.membership() for p in peers), return_exceptions=True)
        answers = [r for r in results if isinstance(r, types_pb2.Membership)]
        if answers:
            await self.adopt(max(answers, key=lambda m: m.epoch))
        return bool(answers)

    @contextmanager
    def request(self) -> Iterator[Placement]:
        """Plan a coordinated request on the current placement, and track it until it ends."""
        placement = self._placement
        epoch = placement.membership.epoch
        self._inflight[epoch] += 1
        try:
            yield placement
        finally:
            self._inflight[epoch] -= 1
            if not self._inflight[epoch]:
                del self._inflight[epoch]

    async def _wait_drained(self, epoch: int, seconds: float) -> None:
        """Poll: membership changes are rare, and the request path stays free of notifications."""
        deadline = asyncio.get_running_loop().time() + seconds
        while any(e < epoch for e in self._inflight):
            if asyncio.get_running_loop().time() >= deadline:
                log.warning("requests planned before epoch %d still running after %.1fs", epoch, seconds)
                return
            await asyncio.sleep(0.01)

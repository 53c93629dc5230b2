"""The replicas this node can reach: itself and a link to every other member, kept in step with
the membership."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kvnode.cluster.local import LocalReplica
from kvnode.cluster.replica import RemoteReplica, Replica
from kvnode.core.membership import Membership

log = logging.getLogger(__name__)


class Roster:
    """This node's own store and one link (:class:`RemoteReplica`) per other member, by member id."""

    def __init__(self, local: LocalReplica, make_link: Callable[[str, str], RemoteReplica]) -> None:
        self.local = local
        self._make_link = make_link
        self._links: dict[str, RemoteReplica] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def sync(self, membership: Membership) -> None:
        """Open links to new members, and close links to members that left or moved."""
        wanted = {m.id: m.replica_address for m in membership.members if m.id != self.local.id}
        for member_id, link in list(self._links.items()):
            if wanted.get(member_id) != link.address:
                del self._links[member_id]
                self._close_later(link)
        for member_id, address in wanted.items():
            if member_id not in self._links:
                self._links[member_id] = self._make_link(member_id, address)

    def renew(self, membership: Membership, grace: float) -> None:
        """A new link to every peer (new channels, made with the credentials as they are now: a
        renewed certificate); the old links close after ``grace`` seconds, once the calls already
        sent on them have had their time."""
        old = list(self._links.values())
        self._links.clear()
        self.sync(membership)
        for link in old:
            self._close_later(link, after=grace)

    def _close_later(self, link: RemoteReplica, after: float = 0.0) -> None:
        async def close() -> None:
            await asyncio.sleep(after)
            await link.close()

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def get(self, member_id: str) -> Replica:
        if member_id == self.local.id:
            return self.local
        return self._links[member_id]

    def peer(self, member_id: str) -> RemoteReplica | None:
        return self._links.get(member_id)

    @property
    def peers(self) -> list[RemoteReplica]:
        return list(self._links.values())

    def preferred(self, replicas: tuple[str, ...]) -> list[str]:
        """Replicas in the order to ask them: this node, then healthy peers, then the rest.

        Peers come in one fixed order per node (the ids after this one, wrapping around), not
        in each partition's order: a node's reads then go to as few peers as possible and share
        their RPCs, while different nodes still prefer different peers."""
        local = [r for r in replicas if r == self.local.id]
        peers = sorted((r for r in replicas if r != self.local.id), key=self._rank)
        healthy = [r for r in peers if self._links[r].healthy]
        rest = [r for r in peers if not self._links[r].healthy]
        return local + healthy + rest

    def _rank(self, member_id: str) -> tuple[bool, str]:
        return member_id < self.local.id, member_id

    async def close(self) -> None:
        links = list(self._links.values())
        self._links.clear()
        await asyncio.gather(*(link.close() for link in links), *self._closing, return_exceptions=True)

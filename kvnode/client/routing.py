"""Sending a key's request straight to one of its replicas.

Any node can coordinate any key, but a node that is not a replica must forward the request: one
more network hop. The router learns the membership from the cluster, places keys with the same
rendezvous hashing the nodes use, and names the replicas' addresses.

A member address is used only while the client already holds a live connection to it. Member
addresses are what the nodes call each other (in Kubernetes, pod DNS names), and the client may not
be able to reach them at all, e.g. through a port-forward. Asking for a replica starts a connection
in the background instead, so an unreachable member never costs a call a connect timeout: the call
simply goes to a configured endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from kvnode.client.channels import ChannelPool
from kvnode.core.errors import KVError
from kvnode.core.membership import Membership
from kvnode.core.placement import Placement

log = logging.getLogger(__name__)

MIN_REFRESH_GAP = 1.0
"""Failures ask for a fresh membership; this bounds how often that happens."""
RETRY_FAILED_REFRESH = 5.0
"""A refresh that failed (every endpoint down, say) is tried again this soon, not a full interval
later."""


class Router:
    """Knows the cluster's placement (refreshed in the background) and names a key's replicas."""

    def __init__(
        self,
        pool: ChannelPool,
        fetch: Callable[[], Awaitable[Membership]],
        *,
        refresh_interval: float,
        usable: Callable[[str], bool],
    ) -> None:
        self._pool = pool
        self._fetch = fetch
        self._usable = usable
        self.refresh_interval = refresh_interval
        self.placement: Placement | None = None
        self._next_refresh = 0.0
        self._last_refresh = -MIN_REFRESH_GAP
        self._task: asyncio.Task[None] | None = None

    def replicas(self, key: bytes) -> list[str]:
        """Addresses of the key's replicas that are connected now, in preference order."""
        self._maybe_refresh()
        placement = self.placement
        if placement is None:
            return []
        membership = placement.membership
        ids = placement.read_replicas(placement.partition(key))
        addresses = [membership.address_of(i) for i in ids]
        return [a for a in addresses if self._usable(a) and self._pool.ready(a)]

    def invalidate(self) -> None:
        """A call failed: the membership may have changed, so fetch it again soon."""
        self._next_refresh = min(self._next_refresh, self._last_refresh + MIN_REFRESH_GAP)

    def _maybe_refresh(self) -> None:
        if self._task is None and time.monotonic() >= self._next_refresh:
            self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        self._last_refresh = time.monotonic()
        wait = min(self.refresh_interval, RETRY_FAILED_REFRESH)
        try:
            membership = await self._fetch()
            current = self.placement
            if current is None or current.membership != membership:
                self.placement = Placement(membership)
                for member in membership.members:
                    if self._usable(member.address):
                        self._pool.ready(member.address)
            wait = self.refresh_interval
        except (KVError, ValueError) as exc:
            log.debug("membership refresh failed: %s", exc)
        finally:
            self._next_refresh = time.monotonic() + wait
            self._task = None

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

"""Changing a cluster's membership safely, one member at a time.

Adding a member takes two epochs: the newcomer enters as JOINING (writes reach it and the old
replicas alike, reads stay on the old replicas) and streams in the partitions it gains; then it
becomes ACTIVE. Removing one is the mirror image: LEAVING while it drains its partitions to their
new owners and verifies them; then it is dropped. Every step checks what the cluster already holds
first, so running a change again after a crash resumes it instead of starting over.

The operator, ``kvctl member`` and ``kvnode local-cluster`` all drive changes through
:class:`Reconfigurer`, over an :class:`~kvnode.client.admin.AsyncAdmin`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Protocol

from kvnode.api.v1 import admin_pb2
from kvnode.client.admin import AsyncAdmin
from kvnode.client.credentials import Credentials
from kvnode.core.errors import FailedPrecondition, KVError, Unavailable
from kvnode.core.membership import Member, Membership, MemberState

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
Progress = Callable[[str], None]


class MemberAdmin(Protocol):
    """The Admin calls a membership change makes (:class:`AsyncAdmin` has them)."""

    async def membership(self, address: str | None = None, *, timeout: float | None = None) -> Membership: ...

    async def set_membership(
        self, address: str, membership: Membership, *, timeout: float | None = None
    ) -> int: ...

    async def join(self, address: str, *, timeout: float | None = None) -> admin_pb2.TransferStatus: ...

    async def decommission(
        self, address: str, *, timeout: float | None = None
    ) -> admin_pb2.TransferStatus: ...


class Reconfigurer:
    """Drives membership changes through the Admin service of the members. ``admin`` sends the
    calls, each to the node it names, with the admin client's timeout per call."""

    def __init__(
        self,
        admin: MemberAdmin,
        seeds: Sequence[str],
        *,
        transfer_timeout: float = 3600.0,
        progress: Progress | None = None,
    ) -> None:
        self._admin = admin
        self._seeds = list(seeds)
        self._transfer_timeout = transfer_timeout
        self._progress = progress or (lambda message: log.info("%s", message))

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        seeds: Sequence[str],
        *,
        timeout: float = 10.0,
        transfer_timeout: float = 3600.0,
        progress: Progress | None = None,
        credentials: Credentials | None = None,
    ) -> AsyncIterator[Reconfigurer]:
        """``async with Reconfigurer.connect(seeds) as reconfig``: over an admin client of its own,
        with ``timeout`` seconds per call, closed at the end."""
        async with AsyncAdmin.connect(timeout=timeout, credentials=credentials) as admin:
            yield cls(admin, seeds, transfer_timeout=transfer_timeout, progress=progress)

    async def current(self) -> Membership:
        """The newest membership any reachable seed or member holds (asked in parallel, so that
        one hung node costs one timeout, not one per node)."""
        answers, errors = await self._memberships(self._seeds)
        if not answers:
            raise Unavailable(f"no node answered GetMembership: {'; '.join(errors)}")
        newest = max(answers, key=lambda m: m.epoch)
        others = [m.address for m in newest.members if m.address not in self._seeds]
        more, _ = await self._memberships(others)  # members may know a newer epoch than the seeds
        return max([newest, *more], key=lambda m: m.epoch)

    async def _memberships(self, addresses: Sequence[str]) -> tuple[list[Membership], list[str]]:
        replies = await asyncio.gather(
            *(self._admin.membership(a) for a in addresses), return_exceptions=True
        )
        answers = [r for r in replies if isinstance(r, Membership)]
        errors = [
            f"{a}: {r}" for a, r in zip(addresses, replies, strict=True) if isinstance(r, BaseException)
        ]
        return answers, errors

    async def install(self, membership: Membership, extra: Sequence[str] = ()) -> None:
        """Install a membership on every member (and ``extra`` addresses). All must accept it:
        a member that cannot be reached stops the change, to be retried later."""
        targets = list(dict.fromkeys([m.address for m in membership.members] + list(extra)))
        results = await asyncio.gather(
            *(self._admin.set_membership(a, membership) for a in targets), return_exceptions=True
        )
        failures = [(a, r) for a, r in zip(targets, results, strict=True) if isinstance(r, BaseException)]
        if failures:
            # A refusal (stale or conflicting epoch) is definite; anything else may pass on retry.
            kind = (
                FailedPrecondition
                if any(isinstance(f, FailedPrecondition) for _, f in failures)
                else Unavailable
            )
            raise kind(
                f"membership epoch {membership.epoch} not installed everywhere: "
                + "; ".join(_at(a, f) for a, f in failures)
            )
        self._progress(f"epoch {membership.epoch}: {describe(membership)}")

    async def bootstrap(self) -> Membership:
        """Give a cluster started from --peers (epoch 0) a real epoch, so that nodes started
        later learn the membership from it instead of from their own flags."""
        current = await self.current()
        if current.epoch == 0:
            current = replace(current, epoch=1)
            await self.install(current)
        return current

    async def add(self, member_id: str, address: str, peer_address: str = "") -> Membership:
        """Make ``member_id`` (already running at ``address``, serving peers at ``peer_address``,
        empty if on ``address`` too) an ACTIVE member with its data."""
        current = await self.bootstrap()
        existing = current.member(member_id)
        if existing is not None and existing.state == MemberState.ACTIVE and existing.address == address:
            return current
        if existing is not None and existing.state == MemberState.LEAVING:
            raise FailedPrecondition(f"{member_id} is leaving; finish removing it before adding it back")
        if existing is None:
            _refuse_concurrent_change(current)
            members = (*current.members, Member(member_id, address, MemberState.JOINING, peer_address))
            current = replace(current, epoch=current.epoch + 1, members=members)
            await self.install(current)
        else:
            await self.install(current)  # finish a half-done install after a crash
        self._progress(f"{member_id}: streaming in the partitions it gains")
        await self._await_transfer(address, join=True)
        return await self._finish(current, member_id, MemberState.ACTIVE)

    async def remove(self, member_id: str) -> Membership:
        """Drain ``member_id``'s data to the remaining members, verify it, then drop it."""
        current = await self.current()
        existing = current.member(member_id)
        if existing is None:
            return current
        if existing.state == MemberState.JOINING:
            raise FailedPrecondition(f"{member_id} is still joining; finish adding it before removing it")
        remaining = [m for m in current.members if m.id != member_id and m.state != MemberState.LEAVING]
        if len(remaining) < current.replication_factor:
            raise FailedPrecondition(
                f"removing {member_id} would leave {len(remaining)} members, fewer than the replication "
                f"factor {current.replication_factor}"
            )
        if existing.state == MemberState.ACTIVE:
            _refuse_concurrent_change(current)
            members = tuple(
                replace(m, state=MemberState.LEAVING) if m.id == member_id else m for m in current.members
            )
            current = replace(current, epoch=current.epoch + 1, members=members)
            await self.install(current)
        else:
            await self.install(current)
        self._progress(f"{member_id}: draining its partitions to their new owners")
        await self._await_transfer(existing.address, join=False)
        return await self._finish(current, member_id, None, extra=[existing.address])

    async def _finish(
        self, current: Membership, member_id: str, state: MemberState | None, extra: Sequence[str] = ()
    ) -> Membership:
        """One more epoch: the member becomes ``state``, or is dropped when ``state`` is None."""
        members = tuple(
            (replace(m, state=state) if m.id == member_id and state is not None else m)
            for m in current.members
            if not (m.id == member_id and state is None)
        )
        final = replace(current, epoch=current.epoch + 1, members=members)
        await self.install(final, extra)
        return final

    async def _await_transfer(self, address: str, *, join: bool) -> admin_pb2.TransferStatus:
        """Start (or look in on) the node's join or decommission until it is done."""
        kind = "join" if join else "decommission"
        start = self._admin.join if join else self._admin.decommission
        deadline = asyncio.get_running_loop().time() + self._transfer_timeout
        last_done = -1
        while asyncio.get_running_loop().time() < deadline:
            status = await start(address)
            if status.kind == kind:  # else another transfer (a rebuild) runs first
                if status.state == admin_pb2.TRANSFER_STATE_DONE:
                    self._progress(
                        f"{status.kind} done: {status.records_copied} records, "
                        f"{status.partitions_total} partitions"
                    )
                    return status
                if status.state == admin_pb2.TRANSFER_STATE_FAILED:
                    raise Unavailable(f"{status.kind} on {address} failed: {status.error}")
                if status.partitions_done != last_done:
                    last_done = status.partitions_done
                    self._progress(
                        f"{status.kind}: {status.partitions_done}/{status.partitions_total} partitions"
                    )
            await asyncio.sleep(POLL_SECONDS)
        raise Unavailable(f"{kind} on {address} did not finish in {self._transfer_timeout:.0f}s")


def _at(address: str, error: BaseException) -> str:
    """An error named after the node it came from (a refusal's message names none)."""
    message = error.message if isinstance(error, KVError) else str(error)
    return message if address in message else f"{address}: {message}"


def _refuse_concurrent_change(membership: Membership) -> None:
    busy = [m.id for m in membership.members if m.state != MemberState.ACTIVE]
    if busy:
        raise FailedPrecondition(
            f"another membership change is under way ({', '.join(busy)}); finish it first"
        )


def describe(membership: Membership) -> str:
    return ", ".join(
        m.id if m.state == MemberState.ACTIVE else f"{m.id} ({m.state.name.lower()})"
        for m in membership.members
    )

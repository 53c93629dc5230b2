"""Cluster membership: who the members are, in which state, at which epoch.

A member is ACTIVE, JOINING or LEAVING. Reads use the *old view* (ACTIVE + LEAVING members) and
writes must reach a quorum of the old view and of the *new view* (ACTIVE + JOINING). So while data
streams to a joining member, or away from a leaving one, no read can miss an acknowledged write.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from kvnode.api.v1 import types_pb2
from kvnode.core.names import validate_node_id


class MemberState(IntEnum):
    ACTIVE = types_pb2.MEMBER_STATE_ACTIVE
    JOINING = types_pb2.MEMBER_STATE_JOINING
    LEAVING = types_pb2.MEMBER_STATE_LEAVING


_STEPS = frozenset(
    {
        (None, MemberState.JOINING),
        (MemberState.JOINING, MemberState.ACTIVE),
        (MemberState.ACTIVE, MemberState.LEAVING),
        (MemberState.LEAVING, None),
    }
)


def _state_name(state: MemberState | None) -> str:
    return "not a member" if state is None else state.name


@dataclass(frozen=True)
class Member:
    """``address`` serves clients; ``peer_address`` serves peers (Replica and transfers), empty for
    a member that serves them on ``address`` too (see docs/design.md, "Peer ports")."""

    id: str
    address: str
    state: MemberState = MemberState.ACTIVE
    peer_address: str = ""

    @property
    def replica_address(self) -> str:
        """Where peers dial this member."""
        return self.peer_address or self.address


@dataclass(frozen=True)
class Membership:
    epoch: int
    members: tuple[Member, ...]
    replication_factor: int
    partitions: int

    def __post_init__(self) -> None:
        ids = [m.id for m in self.members]
        if not ids:
            raise ValueError("a membership needs at least one member")
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate member id in membership: {sorted(ids)}")
        for member_id in ids:
            validate_node_id(member_id)
        if self.replication_factor < 1:
            raise ValueError("replication factor must be at least 1")
        if not 1 <= self.partitions <= 65535:
            raise ValueError("partitions must be between 1 and 65535")
        if not self.old_view or not self.new_view:
            raise ValueError("a membership needs at least one ACTIVE member")

    @property
    def old_view(self) -> tuple[str, ...]:
        """Members that serve reads: everyone but joiners."""
        return tuple(m.id for m in self.members if m.state != MemberState.JOINING)

    @property
    def new_view(self) -> tuple[str, ...]:
        """Members that will own data once the transition ends: everyone but leavers."""
        return tuple(m.id for m in self.members if m.state != MemberState.LEAVING)

    @property
    def in_transition(self) -> bool:
        return any(m.state != MemberState.ACTIVE for m in self.members)

    def member(self, member_id: str) -> Member | None:
        return next((m for m in self.members if m.id == member_id), None)

    def address_of(self, member_id: str) -> str:
        member = self.member(member_id)
        if member is None:
            raise KeyError(member_id)
        return member.address

    def same_config(self, other: Membership) -> bool:
        """Equal apart from the epoch."""
        return (
            self.members == other.members
            and self.replication_factor == other.replication_factor
            and self.partitions == other.partitions
        )

    def successor_problem(self, new: Membership) -> str | None:
        """Why ``new`` cannot come right after this membership, or None when it can.

        The next epoch changes at most one member's state, the way membership changes go (see
        ``kvnode.client.reconfig``): a new member enters JOINING, a JOINING member becomes ACTIVE,
        an ACTIVE member becomes LEAVING, a LEAVING member is dropped. Addresses may change (a pod
        that moved). The replication factor and the partitions never change. Epoch 0 is only the
        nodes' flags, so the first real epoch may be anything valid.
        """
        if new.epoch != self.epoch + 1:
            return f"epoch {new.epoch} is not the next epoch after {self.epoch}"
        if self.epoch == 0:
            return None
        if new.replication_factor != self.replication_factor:
            return (
                f"the replication factor cannot change ({self.replication_factor} -> "
                f"{new.replication_factor})"
            )
        before = {m.id: m.state for m in self.members}
        after = {m.id: m.state for m in new.members}
        changes = [
            (member_id, before.get(member_id), after.get(member_id))
            for member_id in dict.fromkeys([*before, *after])
            if before.get(member_id) != after.get(member_id)
        ]
        if len(changes) > 1:
            names = ", ".join(c[0] for c in changes)
            return f"{len(changes)} members change state at once ({names}); one at a time"
        for member_id, was, becomes in changes:
            if (was, becomes) not in _STEPS:
                return (
                    f"member {member_id} cannot go from {_state_name(was)} to {_state_name(becomes)} "
                    "in one epoch"
                )
        return None

    def to_proto(self) -> types_pb2.Membership:
        return types_pb2.Membership(
            epoch=self.epoch,
            members=[
                types_pb2.Member(
                    id=m.id,
                    address=m.address,
                    state=int(m.state),  # type: ignore[arg-type]
                    peer_address=m.peer_address,
                )
                for m in self.members
            ],
            replication_factor=self.replication_factor,
            partitions=self.partitions,
        )

    @classmethod
    def from_proto(cls, msg: types_pb2.Membership) -> Membership:
        members = []
        for m in msg.members:
            if m.state not in MemberState._value2member_map_:
                raise ValueError(f"member {m.id!r} has no valid state")
            members.append(Member(m.id, m.address, MemberState(m.state), m.peer_address))
        return cls(msg.epoch, tuple(members), msg.replication_factor, msg.partitions)

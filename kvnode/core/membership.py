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


@dataclass(frozen=True)
class Member:
    id: str
    address: str
    state: MemberState = MemberState.ACTIVE


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

    def to_proto(self) -> types_pb2.Membership:
        return types_pb2.Membership(
            epoch=self.epoch,
            members=[
                types_pb2.Member(id=m.id, address=m.address, state=int(m.state))  # type: ignore[arg-type]
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
            members.append(Member(m.id, m.address, MemberState(m.state)))
        return cls(msg.epoch, tuple(members), msg.replication_factor, msg.partitions)

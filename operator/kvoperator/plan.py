"""Decisions about replicas and membership, as pure functions of what was observed.

The membership step and the StatefulSet step both follow from these, so that an operator that
restarts at any point reaches the same decision from the same cluster state:

* Before the membership has an epoch, the StatefulSet keeps the size it was created with, and the
  operator bootstraps epoch 1 once every initial pod is Ready.
* A half-done change (a JOINING or LEAVING member) is finished first; Reconfigurer resumes it.
* Scaling up: the StatefulSet grows at once; the new pods join one at a time, lowest ordinal
  first, each once its pod is Ready.
* Scaling down: the highest ordinal is decommissioned first (LEAVING, drained, verified, dropped),
  one at a time, and the StatefulSet only shrinks below a pod once that pod is no member any more.
* Going below the replication factor is refused: nothing is drained and nothing shrinks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kvnode.core.membership import Member, Membership, MemberState
from kvoperator import names


@dataclass(frozen=True)
class Bootstrap:
    """Install epoch 1 with the members the nodes started with."""

    membership: Membership

    def describe(self) -> str:
        return f"bootstrapping membership epoch 1 with {len(self.membership.members)} members"


@dataclass(frozen=True)
class AddMember:
    """Join a member (or finish its join), streaming its partitions to it."""

    member_id: str
    address: str
    peer_address: str = ""

    def describe(self) -> str:
        return f"adding {self.member_id}"


@dataclass(frozen=True)
class RemoveMember:
    """Decommission a member (or finish its decommission): drain, verify, drop."""

    member_id: str

    def describe(self) -> str:
        return f"decommissioning {self.member_id}"


@dataclass(frozen=True)
class UpdateAddresses:
    """A new epoch with the addresses that members' pods came back with, or with the peer ports
    they serve since an upgrade (a legacy single-port member's record names none)."""

    membership: Membership

    def describe(self) -> str:
        return f"updating member addresses (epoch {self.membership.epoch})"


@dataclass(frozen=True)
class Wait:
    """Nothing may change yet, and why."""

    reason: str  # a condition reason: Bootstrapping, ScalingUp, ScalingDown, NoNodeAnswers
    message: str

    def describe(self) -> str:
        return self.message


Action = Bootstrap | AddMember | RemoveMember | UpdateAddresses | Wait


@dataclass(frozen=True)
class MembershipPlan:
    """The next change (None: the membership matches the spec) and any refusal of the spec."""

    action: Action | None
    refusal: str = ""  # why spec.replicas cannot be honoured (the spec is refused, not the cluster)


def effective_replicas(replicas: int, replication_factor: int, members: int) -> tuple[int, str]:
    """The member count to aim for, and why it differs from ``replicas`` (if it does)."""
    if replicas < replication_factor:
        keep = max(members, replication_factor)
        return keep, (
            f"spec.replicas={replicas} is below replicationFactor={replication_factor}: every partition "
            f"needs {replication_factor} replicas on distinct members, so the scale-down is refused "
            f"and the store keeps {keep} members"
        )
    return replicas, ""


def member_ordinals(store: str, membership: Membership) -> dict[str, int]:
    result = {}
    for member in membership.members:
        ordinal = names.ordinal_of(store, member.id)
        if ordinal is not None:
            result[member.id] = ordinal
    return result


def statefulset_replicas(
    store: str,
    replicas: int,
    replication_factor: int,
    membership: Membership | None,
    current: int | None,
) -> int:
    """How many pods the StatefulSet should have now."""
    if membership is None or membership.epoch == 0:
        # Not bootstrapped (or no node answered): never resize a cluster that has no epoch yet.
        return current if current is not None else replicas
    ordinals = member_ordinals(store, membership)
    target, _ = effective_replicas(replicas, replication_factor, len(membership.members))
    highest = max(ordinals.values(), default=-1) + 1
    return max(target, highest)


def plan_membership(
    store: str,
    replicas: int,
    replication_factor: int,
    membership: Membership | None,
    serving: dict[int, str],
    peers: dict[int, str] | None = None,
) -> MembershipPlan:
    """The next membership change to make. ``serving`` maps the ordinals of Ready, healthy pods
    to their member addresses, ``peers`` those of them that have a peer port to its address."""
    peers = peers or {}
    if membership is None:
        return MembershipPlan(Wait("NoNodeAnswers", "waiting for a node of the store to answer"))
    if membership.epoch == 0:
        return MembershipPlan(_bootstrap(store, replication_factor, membership, serving, peers))
    ordinals = member_ordinals(store, membership)
    # Finish a change that is under way (after an operator restart, say).
    for member in membership.members:
        if member.state == MemberState.JOINING:
            ordinal = ordinals.get(member.id, -1)
            address = serving.get(ordinal, member.address)
            return MembershipPlan(AddMember(member.id, address, peers.get(ordinal, member.peer_address)))
        if member.state == MemberState.LEAVING:
            return MembershipPlan(RemoveMember(member.id))
    # Members whose pods came back at a new address (pod-ip mode), or with a peer port their
    # record does not name yet (the upgrade from single-port members).
    peer_of = _peer_addresses(membership, ordinals, peers)
    moved = tuple(
        replace(m, address=serving[o], peer_address=peer_of[m.id])
        for m in membership.members
        if (o := ordinals.get(m.id, -1)) in serving
        and (serving[o], peer_of[m.id]) != (m.address, m.peer_address)
    )
    if moved:
        by_id = {m.id: m for m in moved}
        members = tuple(by_id.get(m.id, m) for m in membership.members)
        return MembershipPlan(
            UpdateAddresses(replace(membership, epoch=membership.epoch + 1, members=members))
        )
    target, refusal = effective_replicas(replicas, replication_factor, len(membership.members))
    # Scale up: the lowest missing ordinal joins once its pod is Ready.
    missing = sorted(i for i in range(target) if names.pod(store, i) not in ordinals)
    if missing:
        first = missing[0]
        pod = names.pod(store, first)
        if first not in serving:
            return MembershipPlan(
                Wait("ScalingUp", f"waiting for pod {pod} to be Ready before it joins"), refusal
            )
        unready = sorted(m for m, o in ordinals.items() if o not in serving)
        if unready:  # every member must take the new epoch
            return MembershipPlan(
                Wait("ScalingUp", f"adding {pod} waits until {', '.join(unready)} serve again"), refusal
            )
        return MembershipPlan(AddMember(pod, serving[first], peers.get(first, "")), refusal)
    # Scale down: the highest ordinal leaves first, while every other member is serving.
    extra = sorted((o for o in ordinals.values() if o >= target), reverse=True)
    if extra:
        leaving = names.pod(store, extra[0])
        unready = sorted(m for m, o in ordinals.items() if m != leaving and o not in serving)
        if unready:
            return MembershipPlan(
                Wait(
                    "ScalingDown", f"decommissioning {leaving} waits until {', '.join(unready)} serve again"
                ),
                refusal,
            )
        return MembershipPlan(RemoveMember(leaving), refusal)
    return MembershipPlan(None, refusal)


def _peer_addresses(
    membership: Membership, ordinals: dict[str, int], peers: dict[int, str]
) -> dict[str, str]:
    """The peer address each member's record should name. Records change only once every member's
    pod serves a peer port (then: those), or none does (then: none, a rollback): mid-rollout a
    member not yet restarted may run a node that knows no peer ports, and dials the others'
    client port for Replica, which a node stops serving once its record names a peer port."""
    every = all(ordinals.get(m.id, -1) in peers for m in membership.members)
    if every:
        return {m.id: peers[ordinals[m.id]] for m in membership.members}
    if not peers:
        return {m.id: "" for m in membership.members}
    return {m.id: m.peer_address for m in membership.members}


def _bootstrap(
    store: str,
    replication_factor: int,
    membership: Membership,
    serving: dict[int, str],
    peers: dict[int, str],
) -> Action:
    """Epoch 1 for the members the nodes started with (their --peers), once each one serves."""
    members = []
    waiting = []
    for member in membership.members:
        ordinal = names.ordinal_of(store, member.id)
        if ordinal is None or ordinal not in serving:
            waiting.append(member.id)
            continue
        members.append(Member(member.id, serving[ordinal], MemberState.ACTIVE, peers.get(ordinal, "")))
    if waiting:
        return Wait(
            "Bootstrapping",
            f"waiting for {', '.join(sorted(waiting))} to serve before bootstrapping the membership",
        )
    return Bootstrap(Membership(1, tuple(members), replication_factor, membership.partitions))

"""Node settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kvnode.core.membership import Member, Membership
from kvnode.core.names import parse_host_port, validate_node_id
from kvnode.core.units import GIB, KIB, MIB


@dataclass(frozen=True)
class Limits:
    """Request size limits. Anything over one is refused with INVALID_ARGUMENT naming it."""

    max_key_bytes: int = 4 * KIB
    max_value_bytes: int = 1 * MIB
    max_batch_items: int = 1000
    max_batch_bytes: int = 4 * MIB

    @property
    def grpc_message_bytes(self) -> int:
        """The transport cap: large enough that our own limits, with their clear messages, bite
        first for any request near them."""
        return 2 * self.max_batch_bytes + 2 * self.max_value_bytes + 1 * MIB


@dataclass(frozen=True)
class Peer:
    node_id: str
    address: str


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    data_dir: Path
    listen: str = "127.0.0.1:7000"
    advertise: str = ""
    metrics_listen: str = ""
    peers: tuple[Peer, ...] = ()
    replication_factor: int = 3
    partitions: int = 1024
    default_consistency: str = "QUORUM"
    limits: Limits = field(default_factory=Limits)
    map_size: int = 1 * GIB
    max_map_size: int = 0
    replica_timeout: float = 2.0
    hint_max_age: float = 3 * 3600.0
    hint_max_bytes: int = 256 * MIB
    hint_replay_interval: float = 1.0
    anti_entropy_interval: float = 60.0
    tombstone_grace: float = 10 * 86400.0
    clock_offset_ms: int = 0
    # TEST-ONLY: a deliberately broken build for the chaos suite (see --unsafe-ack-before-replication).
    unsafe_ack_delay: float = 0.0
    grace_period: float = 10.0

    @property
    def address(self) -> str:
        """How peers reach this node: --advertise, its own --peers entry, or --listen."""
        if self.advertise:
            return self.advertise
        for peer in self.peers:
            if peer.node_id == self.node_id:
                return peer.address
        return self.listen

    def initial_membership(self) -> Membership:
        """Epoch 0: the members named by --peers (or this node alone), all ACTIVE."""
        members = [Member(p.node_id, p.address) for p in self.peers]
        if self.node_id not in {m.id for m in members}:
            members.append(Member(self.node_id, self.address))
        return Membership(0, tuple(members), self.replication_factor, self.partitions)


def parse_peers(value: str) -> tuple[Peer, ...]:
    """Parse ``ID=HOST:PORT,ID=HOST:PORT``; ids and addresses must be unique."""
    peers: list[Peer] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        node_id, sep, address = item.partition("=")
        if not sep:
            raise ValueError(f"invalid peer {item!r}: expected ID=HOST:PORT, e.g. kv-1=10.0.0.2:7000")
        parse_host_port(address, what=f"address for peer {node_id!r}")
        peers.append(Peer(validate_node_id(node_id.strip()), address.strip()))
    ids = [p.node_id for p in peers]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate node id in --peers: {value!r}")
    return tuple(peers)

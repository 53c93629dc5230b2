"""Node settings and the parsing of the values people type into flags."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})$")
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")
_SIZE = re.compile(r"^(?P<num>\d+)(?P<unit>[KMGT]i?B?|B)?$", re.IGNORECASE)
_DURATION = re.compile(r"^(?P<num>\d+(\.\d+)?)(?P<unit>ms|s|m|h|d)?$")


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


def parse_host_port(value: str, *, what: str = "address") -> tuple[str, int]:
    """Split HOST:PORT, refusing anything else with a message that says what was wrong."""
    match = _HOST_PORT.match(value.strip())
    if not match:
        raise ValueError(f"invalid {what} {value!r}: expected HOST:PORT, e.g. 127.0.0.1:7000")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ValueError(f"invalid {what} {value!r}: port must be 1-65535")
    return match["host"].strip("[]"), port


def validate_node_id(value: str) -> str:
    if not _NODE_ID.match(value):
        raise ValueError(
            f"invalid node id {value!r}: use 1-63 letters, digits, '.', '-' or '_', "
            "starting with a letter or digit"
        )
    return value


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


def parse_size(value: str) -> int:
    """Parse a byte size: 4096, 64MiB, 1GB, 2G (binary units)."""
    match = _SIZE.match(value.strip())
    if not match:
        raise ValueError(f"invalid size {value!r}: expected a number with an optional unit (KiB, MiB, GiB)")
    unit = (match["unit"] or "B").upper().rstrip("B").rstrip("I")
    return int(match["num"]) * {"": 1, "K": KIB, "M": MIB, "G": GIB, "T": 1024 * GIB}[unit]


def parse_duration(value: str) -> float:
    """Parse a duration in seconds: 30, 250ms, 10s, 5m, 3h, 10d."""
    match = _DURATION.match(value.strip())
    if not match:
        raise ValueError(f"invalid duration {value!r}: expected e.g. 250ms, 10s, 5m, 3h, 10d")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match["unit"] or "s"]
    return float(match["num"]) * scale

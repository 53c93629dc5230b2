"""A node's settings, defined once: each field carries its default, its parser, its help and its
check. ``kvnode``'s command line is generated from these fields (every flag can also be set as
``KVNODE_<FLAG>``), and the tools that start nodes (``kvnode local-cluster``, the test harness) turn
a :class:`NodeConfig` back into that command line with :meth:`NodeConfig.argv`.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from kvnode.core.errors import StartupError
from kvnode.core.levels import Level
from kvnode.core.membership import Member, Membership
from kvnode.core.names import parse_host_port, validate_node_id
from kvnode.core.units import GIB, MIB, parse_duration, parse_size, positive_int
from kvnode.storage.schema import LMDB_MAX_KEY_BYTES, MAX_KEY_BYTES

MAX_PARTITIONS = 65535


class ConfigError(StartupError):
    """Settings that cannot work together; the message names the flags."""


@dataclass(frozen=True)
class Peer:
    """A member named by --peers. ``peer_address`` is where its Replica service and transfers are
    served: its peer port, or, for a legacy single-port member, ``address`` itself."""

    node_id: str
    address: str
    peer_address: str = ""

    def __post_init__(self) -> None:
        if not self.peer_address:
            object.__setattr__(self, "peer_address", self.address)
        elif parse_host_port(self.peer_address)[0] != parse_host_port(self.address)[0]:
            raise ValueError(f"peer {self.node_id}: its peer port must be on the host of {self.address}")

    def __str__(self) -> str:
        """As --peers writes it: ``ID=HOST:PORT``, or ``ID=HOST:PORT/PEERPORT``."""
        if self.peer_address == self.address:
            return f"{self.node_id}={self.address}"
        return f"{self.node_id}={self.address}/{parse_host_port(self.peer_address)[1]}"


def address(value: str) -> str:
    """HOST:PORT, or empty for "not set"."""
    if value:
        parse_host_port(value)
    return value


def parse_peers(value: str) -> tuple[Peer, ...]:
    """Parse ``ID=HOST:PORT[/PEERPORT],...``: a member's client address and, when it has one, its
    peer port on the same host; ids must be unique."""
    peers: list[Peer] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        node_id, sep, addresses = item.partition("=")
        if not sep:
            raise ValueError(
                f"invalid peer {item!r}: expected ID=HOST:PORT or ID=HOST:PORT/PEERPORT, "
                "e.g. kv-1=10.0.0.2:7000/7001"
            )
        client_address, _, peer_port = addresses.strip().partition("/")
        host, _ = parse_host_port(client_address, what=f"address for peer {node_id!r}")
        peer_address = ""
        if peer_port:
            peer_address = f"{host}:{peer_port}" if ":" not in host else f"[{host}]:{peer_port}"
            parse_host_port(peer_address, what=f"peer port for peer {node_id!r}")
        peers.append(Peer(validate_node_id(node_id.strip()), client_address, peer_address))
    ids = [p.node_id for p in peers]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate node id in --peers: {value!r}")
    return tuple(peers)


def _show_peers(peers: tuple[Peer, ...]) -> str:
    return ",".join(str(p) for p in peers)


def optional_path(value: str) -> Path | None:
    """A file or folder, or empty for "not set"."""
    return Path(value) if value.strip() else None


def parse_bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"invalid switch {value!r}: expected true or false")


def _show_seconds(seconds: float) -> str:
    """Positional and exact (``:g`` would write 30 days as 2.592e+06s, which no flag accepts)."""
    return f"{Decimal(repr(float(seconds))):f}s"


def _hostname() -> str:
    return socket.gethostname().split(".")[0]


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    parse: Callable[[str], Any],
    show: Callable[[Any], str] = str,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A field that is also a flag: ``parse`` reads the flag's text (a ValueError is a usage error),
    ``show`` writes it back."""
    metadata = {"help": help, "parse": parse, "show": show}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Flag:
    """One command-line flag of a node, and the field it sets."""

    name: str  # the field's name, and the argparse destination
    path: tuple[str, ...]  # where the field lives: ("limits", "max_key_bytes")
    help: str
    parse: Callable[[str], Any]
    show: Callable[[Any], str]
    default: Any

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Limits:
    """Request size limits. Anything over one is refused with INVALID_ARGUMENT naming it."""

    max_key_bytes: int = setting(
        500, parse=parse_size, help=f"largest key; at most {MAX_KEY_BYTES}, the longest key the storage holds"
    )
    max_value_bytes: int = setting(1 * MIB, parse=parse_size, help="largest value")
    max_batch_items: int = setting(1000, parse=positive_int, help="most items in a batch or scan page")
    max_batch_bytes: int = setting(4 * MIB, parse=parse_size, help="largest batch, keys plus values")

    def __post_init__(self) -> None:
        if not 1 <= self.max_key_bytes <= MAX_KEY_BYTES:
            raise ConfigError(
                f"--max-key-bytes {self.max_key_bytes} is not a key length the storage can hold: LMDB "
                f"keeps keys of at most {LMDB_MAX_KEY_BYTES} bytes and the indexes add up to "
                f"{LMDB_MAX_KEY_BYTES - MAX_KEY_BYTES} more, so the largest allowed value is {MAX_KEY_BYTES}"
            )
        for name in ("max_value_bytes", "max_batch_items", "max_batch_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")

    @property
    def grpc_message_bytes(self) -> int:
        """The transport cap: large enough that our own limits, with their clear messages, bite
        first for any request near them."""
        return 2 * self.max_batch_bytes + 2 * self.max_value_bytes + 1 * MIB


def file_setting(help: str) -> Any:
    """A setting naming a file or folder, unset by default."""
    return setting(None, parse=optional_path, help=help)


@dataclass(frozen=True)
class Security:
    """TLS, identity and confinement (etcd's flag names). Without any of them a node serves
    plaintext to anyone, as for local development, and logs a warning that says so. See
    docs/security.md."""

    cert_file: Path | None = file_setting("PEM certificate the client port serves (turns TLS on)")
    key_file: Path | None = file_setting("PEM key of --cert-file")
    trusted_ca_file: Path | None = file_setting(
        "PEM CA bundle; when set, the client port requires client certificates signed by it "
        "(mutual TLS), whose Organization values are the caller's roles"
    )
    peer_listen: str = setting(
        "",
        parse=address,
        help="HOST:PORT to serve the Replica service and transfers on; when set, the client port "
        "no longer serves them",
    )
    peer_advertise: str = setting(
        "",
        parse=address,
        help="address peers dial for the peer port (default: from --peers, else --peer-listen)",
    )
    peer_server_name: str = setting(
        "",
        parse=str,
        help="name to check every peer's certificate for, instead of the host dialed (for peers "
        "addressed by IP, whose certificates name them by DNS only)",
    )
    peer_cert_file: Path | None = file_setting(
        "PEM certificate the peer port serves and presents when dialing peers"
    )
    peer_key_file: Path | None = file_setting("PEM key of --peer-cert-file")
    peer_trusted_ca_file: Path | None = file_setting(
        "PEM CA bundle for the peer port: callers must present a certificate signed by it with "
        "O=kvstore:peer, and peers dialed must present one signed by it"
    )
    metrics_cert_file: Path | None = file_setting("PEM certificate the metrics port serves (HTTPS)")
    metrics_key_file: Path | None = file_setting("PEM key of --metrics-cert-file")
    token_file: Path | None = file_setting(
        'bearer tokens, one per line as token,name,uid,"group1,group2" (kube-apiserver\'s static '
        "token format); re-read when it changes"
    )
    backup_root: Path | None = file_setting(
        "folder that folder backup locations must resolve under (others are refused)"
    )
    reflection: bool = setting(True, parse=parse_bool, help="serve gRPC reflection on the client port")

    def __post_init__(self) -> None:
        pairs = (
            ("cert_file", "key_file"),
            ("peer_cert_file", "peer_key_file"),
            ("metrics_cert_file", "metrics_key_file"),
        )
        for cert, key in pairs:
            if (getattr(self, cert) is None) != (getattr(self, key) is None):
                raise ConfigError(f"{_flag(cert)} and {_flag(key)} go together")
        for ca, cert in (("trusted_ca_file", "cert_file"), ("peer_trusted_ca_file", "peer_cert_file")):
            if getattr(self, ca) is not None and getattr(self, cert) is None:
                raise ConfigError(f"{_flag(ca)} needs {_flag(cert)}: client certificates need TLS")
        if self.peer_cert_file is not None and not self.peer_listen:
            raise ConfigError("--peer-cert-file needs --peer-listen: it is the peer port's certificate")
        for name in ("peer_listen", "peer_advertise"):
            value = getattr(self, name)
            if value:
                try:
                    parse_host_port(value, what=_flag(name))
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None

    @property
    def client_tls(self) -> bool:
        return self.cert_file is not None

    @property
    def peer_tls(self) -> bool:
        return self.peer_cert_file is not None


def _moved(address: str, peer_address: str) -> str:
    """A membership record's peer address: empty when peers use the client address."""
    return "" if peer_address == address else peer_address


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node is started with. Each field is a flag of ``kvnode`` (see the module)."""

    node_id: str = setting(default_factory=_hostname, parse=validate_node_id, help="this node's unique id")
    data_dir: Path = setting(Path("kvnode-data"), parse=Path, help="directory for the LMDB store")
    listen: str = setting("127.0.0.1:7000", parse=address, help="gRPC address to serve on")
    advertise: str = setting(
        "",
        parse=address,
        help="address peers use to reach this node (default: its --peers entry, else --listen)",
    )
    metrics_listen: str = setting(
        "", parse=address, help="HOST:PORT to serve Prometheus metrics at /metrics (off when empty)"
    )
    peers: tuple[Peer, ...] = setting(
        (),
        parse=parse_peers,
        show=_show_peers,
        help="cluster members as ID=HOST:PORT,... (this node included); empty for a single node",
    )
    replication_factor: int = setting(3, parse=positive_int, help="replicas per partition")
    partitions: int = setting(1024, parse=positive_int, help="partitions in the key space (fixed)")
    default_consistency: Level = setting(
        Level.QUORUM,
        parse=Level.parse,
        show=lambda level: level.name,
        help="level for requests that name none: ONE, QUORUM, ALL or LINEARIZABLE",
    )
    limits: Limits = field(default_factory=Limits, metadata={"settings": Limits})
    security: Security = field(default_factory=Security, metadata={"settings": Security})
    max_requests: int = setting(
        1024,
        parse=positive_int,
        help="client requests (KV and Admin) in progress at once; more are refused with "
        "RESOURCE_EXHAUSTED, which the client retries after a pause",
    )
    max_request_memory: int = setting(
        128 * MIB,
        parse=parse_size,
        help="bytes that client requests in progress may hold at once, requests and answers "
        "together (an answer counts until it has left); past it, RESOURCE_EXHAUSTED as for "
        "--max-requests",
    )
    map_size: int = setting(1 * GIB, parse=parse_size, help="initial LMDB map size; grows when full")
    max_map_size: int = setting(
        0, parse=parse_size, help="largest the LMDB map may grow to (0: until the disk is full)"
    )
    replica_timeout: float = setting(
        2.0, parse=parse_duration, show=_show_seconds, help="deadline for calls to peers"
    )
    hint_max_age: float = setting(
        3 * 3600.0,
        parse=parse_duration,
        show=_show_seconds,
        help="hints older than this are dropped (anti-entropy repairs instead)",
    )
    hint_max_bytes: int = setting(256 * MIB, parse=parse_size, help="hint backlog bound per peer")
    hint_replay_interval: float = setting(
        1.0, parse=parse_duration, show=_show_seconds, help="time between deliveries of stored hints"
    )
    anti_entropy_interval: float = setting(
        60.0, parse=parse_duration, show=_show_seconds, help="time between anti-entropy rounds"
    )
    scrub_interval: float = setting(
        86400.0,
        parse=parse_duration,
        show=_show_seconds,
        help="time between scrub passes, which check every stored record and repair those failing "
        "their checksum from other replicas (0: no scrub)",
    )
    tombstone_grace: float = setting(
        10 * 86400.0,
        parse=parse_duration,
        show=_show_seconds,
        help="how long deletes are remembered; must exceed --hint-max-age and the anti-entropy interval",
    )
    grace_period: float = setting(
        10.0,
        parse=parse_duration,
        show=_show_seconds,
        help="on SIGTERM, how long in-flight requests may take to finish",
    )
    max_clock_offset: float = setting(
        1.0,
        parse=parse_duration,
        show=_show_seconds,
        help="how far another node's clock, or a record's version, may be ahead of this node's clock; "
        "anything further is refused",
    )
    backup_hmac_key_file: str = setting(
        "",
        parse=str,
        help="file holding the store's key (16+ random bytes) that signs and checks the manifests "
        "of backups in buckets (s3://...); needed for those, not for folders",
    )
    backup_encryption_key_file: str = setting(
        "",
        parse=str,
        help="file holding a 256-bit key (64 hex digits) that encrypts bucket backups with AES-GCM "
        "(client-side, besides the bucket's own encryption); needed to restore them",
    )
    clock_offset_ms: int = setting(0, parse=int, help="skew this node's clock (for fault-injection tests)")

    def __post_init__(self) -> None:
        try:
            validate_node_id(self.node_id)
        except ValueError as exc:
            raise ConfigError(f"--node-id: {exc}") from None
        for name in ("listen", "advertise", "metrics_listen"):
            value = getattr(self, name)
            try:
                if value:
                    parse_host_port(value, what="--" + name.replace("_", "-"))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise ConfigError(f"--partitions must be between 1 and {MAX_PARTITIONS}, not {self.partitions}")
        if self.replication_factor < 1:
            raise ConfigError("--replication-factor must be at least 1")
        if self.peers and self.node_id not in {p.node_id for p in self.peers}:
            raise ConfigError(f"--peers must include this node ({self.node_id})")
        sec = self.security
        if len(self.peers) > 1 and sec.token_file and not sec.trusted_ca_file and not sec.peer_listen:
            raise ConfigError(
                "--token-file without --trusted-ca-file needs --peer-listen: peers call each other "
                "with their certificates, which this client port would not ask for"
            )
        if self.max_request_memory < self.limits.grpc_message_bytes:
            raise ConfigError(
                f"--max-request-memory ({self.max_request_memory}) must hold the largest request "
                f"or answer the limits allow, {self.limits.grpc_message_bytes} bytes "
                "(twice --max-batch-bytes, plus twice --max-value-bytes, plus 1 MiB)"
            )
        if self.tombstone_grace <= self.hint_max_age + self.anti_entropy_interval:
            raise ConfigError(
                f"--tombstone-grace ({self.tombstone_grace:g}s) must exceed "
                f"--hint-max-age ({self.hint_max_age:g}s) plus "
                f"--anti-entropy-interval ({self.anti_entropy_interval:g}s), "
                "or replaying a hint could resurrect a deleted key"
            )

    @property
    def address(self) -> str:
        """How peers reach this node: --advertise, its own --peers entry, or --listen."""
        if self.advertise:
            return self.advertise
        for peer in self.peers:
            if peer.node_id == self.node_id:
                return peer.address
        return self.listen

    @property
    def peer_address(self) -> str:
        """How peers reach this node's Replica service: --peer-advertise, the peer port of its own
        --peers entry, --peer-listen, else its client address (a single-port node)."""
        sec = self.security
        if sec.peer_advertise:
            return sec.peer_advertise
        for peer in self.peers:
            if peer.node_id == self.node_id and peer.peer_address != peer.address:
                return peer.peer_address
        return sec.peer_listen or self.address

    def initial_membership(self) -> Membership:
        """Epoch 0: the members named by --peers (or this node alone), all ACTIVE."""
        members = [
            Member(p.node_id, p.address, peer_address=_moved(p.address, p.peer_address)) for p in self.peers
        ]
        if self.node_id not in {m.id for m in members}:
            members.append(
                Member(self.node_id, self.address, peer_address=_moved(self.address, self.peer_address))
            )
        return Membership(0, tuple(members), self.replication_factor, self.partitions)

    @classmethod
    def flags(cls) -> list[Flag]:
        """Every setting as a flag, nested ones (the limits) included."""
        return list(_flags(cls, ()))

    @classmethod
    def from_flags(cls, values: Mapping[str, Any]) -> NodeConfig:
        """A configuration from flag values by field name; a missing one keeps its default."""
        config: NodeConfig = _build(cls, values)
        return config

    def argv(self) -> list[str]:
        """This configuration as ``kvnode`` flags: every setting that differs from its default."""
        args: list[str] = []
        for flag in self.flags():
            value: Any = self
            for part in flag.path:
                value = getattr(value, part)
            if value != flag.default:
                args += [flag.flag, flag.show(value)]
        return args


def _flags(cls: type[Any], path: tuple[str, ...]) -> Iterator[Flag]:
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "settings" in meta:  # a group of settings of its own, flattened on the command line
            yield from _flags(meta["settings"], (*path, f.name))
            continue
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        yield Flag(f.name, (*path, f.name), meta["help"], meta["parse"], meta["show"], default)


def _build(cls: type[Any], values: Mapping[str, Any]) -> Any:
    """``cls`` from flag values by name, its groups of settings built the same way."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if "settings" in f.metadata:
            kwargs[f.name] = _build(f.metadata["settings"], values)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)

"""A node's settings, defined once in NodeConfig: the peer list, the cross-field checks (named by
their flags), the flags generated from every field, and the command line ``argv()`` writes back,
which ``kvnode``'s parser must read into the same configuration. Also the failpoints, the one
setting read from the environment alone."""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any

import pytest

from kvnode import failpoints
from kvnode.cli.node import build_parser, config_from_args
from kvnode.config import ConfigError, Limits, NodeConfig, Peer, Security, parse_peers
from kvnode.core.levels import Level
from kvnode.core.units import GIB, MIB

EVERYTHING_SET = NodeConfig(
    node_id="kv-7",
    data_dir=Path("/var/lib/kv 7"),
    listen="0.0.0.0:7100",
    advertise="kv-7.svc:7100",
    metrics_listen="127.0.0.1:9100",
    peers=(Peer("kv-6", "kv-6.svc:7100"), Peer("kv-7", "kv-7.svc:7100", "kv-7.svc:7101")),
    replication_factor=2,
    partitions=256,
    default_consistency=Level.LINEARIZABLE,
    limits=Limits(max_key_bytes=300, max_value_bytes=2 * MIB, max_batch_items=50, max_batch_bytes=8 * MIB),
    map_size=64 * MIB,
    max_map_size=GIB,
    replica_timeout=0.75,
    hint_max_age=1800.0,
    hint_max_bytes=MIB,
    hint_replay_interval=0.5,
    anti_entropy_interval=120.0,
    tombstone_grace=7 * 86400.0,
    grace_period=3.0,
    max_requests=77,
    max_request_memory=96 * MIB,
    max_clock_offset=2.5,
    scrub_interval=3600.0,
    backup_hmac_key_file="/etc/kvstore/backup-hmac/hmac-key",
    backup_encryption_key_file="/etc/kvstore/backup-encryption/encryption-key",
    clock_offset_ms=-250,
    security=Security(
        cert_file=Path("/tls/tls.crt"),
        key_file=Path("/tls/tls.key"),
        trusted_ca_file=Path("/tls/ca.crt"),
        peer_listen="0.0.0.0:7101",
        peer_advertise="kv-7.peers:7101",
        peer_server_name="kv.peers.svc",
        peer_cert_file=Path("/peer/tls.crt"),
        peer_key_file=Path("/peer/tls.key"),
        peer_trusted_ca_file=Path("/peer/ca.crt"),
        metrics_cert_file=Path("/m/tls.crt"),
        metrics_key_file=Path("/m/tls.key"),
        token_file=Path("/tokens.csv"),
        backup_root=Path("/backups"),
        reflection=False,
    ),
)
"""A configuration in which every setting differs from its default."""


@pytest.fixture(autouse=True)
def no_kvnode_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flags take their defaults from KVNODE_* variables: none may leak in from the environment."""
    for name in list(os.environ):
        if name.startswith("KVNODE_"):
            monkeypatch.delenv(name)


def through_the_command_line(config: NodeConfig) -> NodeConfig:
    return config_from_args(build_parser().parse_args(config.argv()))


def field_paths(cls: type[Any], path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every leaf field of a settings dataclass, found without NodeConfig's own walk."""
    out: set[tuple[str, ...]] = set()
    types = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(types[f.name]):
            out |= field_paths(types[f.name], (*path, f.name))
        else:
            out.add((*path, f.name))
    return out


# -- peers ---------------------------------------------------------------------------------------


def test_peers() -> None:
    assert parse_peers("kv-0=127.0.0.1:7000, kv-1=h:7001") == (
        Peer("kv-0", "127.0.0.1:7000"),
        Peer("kv-1", "h:7001"),
    )
    assert parse_peers("") == ()
    with pytest.raises(ValueError, match="expected ID=HOST:PORT"):
        parse_peers("kv-0")
    with pytest.raises(ValueError, match="duplicate node id"):
        parse_peers("a=h:1,a=h:2")
    with pytest.raises(ValueError, match="invalid address for peer 'kv-1'"):
        parse_peers("kv-1=nowhere")


# -- NodeConfig ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"peers": (Peer("n2", "h:1"),)}, ["--peers must include this node (n1)"]),
        (
            {"tombstone_grace": 100.0, "hint_max_age": 60.0, "anti_entropy_interval": 40.0},
            ["--tombstone-grace (100s)", "--hint-max-age (60s)", "--anti-entropy-interval (40s)"],
        ),
        ({"partitions": 70000}, ["--partitions must be between 1 and 65535"]),
        ({"replication_factor": 0}, ["--replication-factor must be at least 1"]),
        (
            {"max_request_memory": 8 * MIB},
            ["--max-request-memory (8388608) must hold the largest request", "11534336 bytes"],
        ),
    ],
    ids=["peers-without-self", "grace-too-short", "partitions", "replication-factor", "request-memory"],
)
def test_settings_that_cannot_work_together_are_refused_naming_their_flags(
    settings: dict[str, Any], named: list[str]
) -> None:
    with pytest.raises(ConfigError) as refused:
        NodeConfig(node_id="n1", **settings)
    assert all(text in str(refused.value) for text in named), str(refused.value)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"listen": "nowhere"}, "--listen"),
        ({"advertise": "h:99999"}, "--advertise"),
        ({"metrics_listen": "h"}, "--metrics-listen"),
        ({"node_id": "-x"}, "--node-id"),
    ],
)
def test_malformed_values_given_in_code_are_refused_naming_the_setting(
    settings: dict[str, Any], named: str
) -> None:
    """Built in code (local-cluster, the test harness) there is no argparse to name the flag."""
    with pytest.raises(ConfigError, match=named):
        NodeConfig(**{"node_id": "n1", **settings})


def test_the_address_peers_use_is_advertise_then_the_peers_entry_then_listen() -> None:
    peers = (Peer("n1", "n1.svc:7000"),)
    assert NodeConfig(node_id="n1", listen="0.0.0.0:7000").address == "0.0.0.0:7000"
    assert NodeConfig(node_id="n1", peers=peers).address == "n1.svc:7000"
    assert NodeConfig(node_id="n1", peers=peers, advertise="a:1").address == "a:1"
    first = NodeConfig(node_id="n1", peers=(*peers, Peer("n2", "n2.svc:7000"))).initial_membership()
    assert (first.epoch, [m.id for m in first.members]) == (0, ["n1", "n2"])


def test_every_setting_is_a_flag_with_its_default_and_help() -> None:
    flags = NodeConfig.flags()
    assert {f.path for f in flags} == field_paths(NodeConfig)
    assert len({f.flag for f in flags}) == len(flags)
    defaults = NodeConfig()
    for f in flags:
        value: Any = defaults
        for part in f.path:
            value = getattr(value, part)
        assert value == f.default, f.flag
        assert f.help, f.flag


def test_argv_round_trips_through_the_kvnode_command_line() -> None:
    assert NodeConfig(node_id="n1").argv() == ["--node-id", "n1"]
    written = EVERYTHING_SET.argv()
    assert {a for a in written if a.startswith("--")} == {f.flag for f in NodeConfig.flags()}
    assert through_the_command_line(EVERYTHING_SET) == EVERYTHING_SET


def test_long_and_fine_durations_survive_the_command_line() -> None:
    """Durations are written out positionally and exactly: a 30-day grace would otherwise become
    exponent notation that no flag accepts, and 1.0000001 s would be rounded."""
    config = NodeConfig(node_id="n1", tombstone_grace=30 * 86400.0, replica_timeout=1.0000001)
    assert through_the_command_line(config) == config


# -- failpoints ----------------------------------------------------------------------------------


def test_failpoints_parse_by_name_and_refuse_unknown_names() -> None:
    assert failpoints.parse("") == {}
    assert failpoints.parse(" ack-before-replication = 2s ; ") == {"ack-before-replication": "2s"}
    with pytest.raises(
        ValueError, match="unknown failpoint 'ack-before-replicaton'; known: ack-before-replication"
    ):
        failpoints.parse("ack-before-replicaton=2s")


def test_a_failpoint_is_none_unless_the_environment_sets_it() -> None:
    assert failpoints.duration("ack-before-replication", {}) is None
    assert failpoints.duration("ack-before-replication", {"OTHER": "x"}) is None
    environ = {failpoints.ENV: "ack-before-replication=250ms"}
    assert failpoints.enabled(environ) == {"ack-before-replication": "250ms"}
    assert failpoints.duration("ack-before-replication", environ) == 0.25


# -- security flags (#12) ------------------------------------------------------------------------


def test_peers_entries_name_a_peer_port_on_the_same_host() -> None:
    peers = parse_peers("a=10.0.0.1:7000/7001,b=h.svc:7000,c=[::1]:7000/7001")
    assert [(p.address, p.peer_address) for p in peers] == [
        ("10.0.0.1:7000", "10.0.0.1:7001"),
        ("h.svc:7000", "h.svc:7000"),  # a single-port member: peers use its client address
        ("[::1]:7000", "[::1]:7001"),
    ]
    assert ",".join(map(str, peers)) == "a=10.0.0.1:7000/7001,b=h.svc:7000,c=[::1]:7000/7001"
    with pytest.raises(ValueError, match="peer port for peer 'a'"):
        parse_peers("a=h:7000/99999")


def test_the_membership_records_peer_ports_and_leaves_single_port_members_as_they_were() -> None:
    config = NodeConfig(node_id="a", peers=parse_peers("a=h1:7000/7001,b=h2:7000"))
    members = {m.id: m for m in config.initial_membership().members}
    assert (members["a"].peer_address, members["a"].replica_address) == ("h1:7001", "h1:7001")
    assert (members["b"].peer_address, members["b"].replica_address) == ("", "h2:7000")
    alone = NodeConfig(node_id="a", listen="h:7000", security=Security(peer_listen="h:7001"))
    assert alone.initial_membership().members[0].peer_address == "h:7001"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cert_file": Path("c")}, "--cert-file and --key-file go together"),
        ({"trusted_ca_file": Path("ca")}, "--trusted-ca-file needs --cert-file"),
        ({"peer_cert_file": Path("c"), "peer_key_file": Path("k")}, "--peer-cert-file needs --peer-listen"),
        ({"metrics_key_file": Path("k")}, "--metrics-cert-file and --metrics-key-file go together"),
        ({"peer_listen": "nowhere"}, "--peer-listen"),
    ],
)
def test_security_flags_that_cannot_work_together_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Security(**settings)


def test_tokens_alone_on_a_single_port_cluster_are_refused_as_peers_could_not_authenticate() -> None:
    peers = parse_peers("a=h1:7000,b=h2:7000")
    tokens_only = Security(cert_file=Path("c"), key_file=Path("k"), token_file=Path("t"))
    with pytest.raises(ConfigError, match="--token-file without --trusted-ca-file needs --peer-listen"):
        NodeConfig(node_id="a", peers=peers, security=tokens_only)
    NodeConfig(node_id="a", security=tokens_only)  # a single node has no peers to authenticate

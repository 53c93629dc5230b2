"""The ``kvnode`` command: run one storage node, or a local cluster of them.

    kvnode --node-id kv-0 --listen 127.0.0.1:7000 --data-dir ./kv0
    kvnode local-cluster --nodes 3 --data-dir ./kvdata

Every flag can also be set as ``KVNODE_<FLAG>`` in the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path

from kvnode import __version__
from kvnode.cli.options import LOG_LEVELS, EnvArgs, positive_int, setup_logging, typed
from kvnode.config import Limits, NodeConfig, parse_peers
from kvnode.core.errors import KVError, StartupError
from kvnode.core.levels import Level
from kvnode.core.names import parse_host_port, validate_node_id
from kvnode.core.units import parse_duration, parse_size
from kvnode.node import Node

log = logging.getLogger("kvnode")


def _address(value: str) -> str:
    """HOST:PORT, or empty for 'not set'."""
    if value:
        parse_host_port(value)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvnode",
        description="Run a kvnode storage node. Use 'kvnode local-cluster --help' for a local cluster.",
    )
    parser.add_argument("--version", action="version", version=f"kvnode {__version__}")
    env = EnvArgs(parser, "KVNODE_")
    env.add(
        "--node-id",
        type=typed(validate_node_id),
        default=socket.gethostname().split(".")[0],
        help="this node's unique id",
    )
    env.add("--listen", type=typed(_address), default="127.0.0.1:7000", help="gRPC address to serve on")
    env.add(
        "--advertise",
        type=typed(_address),
        default="",
        help="address peers use to reach this node (default: its --peers entry, else --listen)",
    )
    env.add("--data-dir", type=Path, default=Path("kvnode-data"), help="directory for the LMDB store")
    env.add(
        "--metrics-listen",
        type=typed(_address),
        default="",
        help="HOST:PORT to serve Prometheus metrics at /metrics (off when empty)",
    )
    env.add(
        "--peers",
        type=typed(parse_peers),
        default=(),
        help="cluster members as ID=HOST:PORT,... (this node included); empty for a single node",
    )
    env.add("--replication-factor", type=typed(positive_int), default=3, help="replicas per partition")
    env.add(
        "--partitions", type=typed(positive_int), default=1024, help="partitions in the key space (fixed)"
    )
    env.add(
        "--default-consistency",
        type=typed(lambda v: Level.parse(v).name),
        default="QUORUM",
        help="level for requests that name none: ONE, QUORUM, ALL or LINEARIZABLE",
    )
    env.add("--max-key-bytes", type=typed(parse_size), default=Limits.max_key_bytes, help="largest key")
    env.add("--max-value-bytes", type=typed(parse_size), default=Limits.max_value_bytes, help="largest value")
    env.add(
        "--max-batch-items",
        type=typed(positive_int),
        default=Limits.max_batch_items,
        help="most items in a batch or scan page",
    )
    env.add(
        "--max-batch-bytes",
        type=typed(parse_size),
        default=Limits.max_batch_bytes,
        help="largest batch, keys plus values",
    )
    env.add(
        "--map-size", type=typed(parse_size), default=1 << 30, help="initial LMDB map size; grows when full"
    )
    env.add(
        "--max-map-size",
        type=typed(parse_size),
        default=0,
        help="largest the LMDB map may grow to (0: until the disk is full)",
    )
    env.add("--replica-timeout", type=typed(parse_duration), default=2.0, help="deadline for calls to peers")
    env.add(
        "--hint-max-age",
        type=typed(parse_duration),
        default=3 * 3600.0,
        help="hints older than this are dropped (anti-entropy repairs instead)",
    )
    env.add("--hint-max-bytes", type=typed(parse_size), default=256 << 20, help="hint backlog bound per peer")
    env.add(
        "--anti-entropy-interval",
        type=typed(parse_duration),
        default=60.0,
        help="time between anti-entropy rounds",
    )
    env.add(
        "--tombstone-grace",
        type=typed(parse_duration),
        default=10 * 86400.0,
        help="how long deletes are remembered; must exceed --hint-max-age and the anti-entropy interval",
    )
    env.add(
        "--grace-period",
        type=typed(parse_duration),
        default=10.0,
        help="on SIGTERM, how long in-flight requests may take to finish",
    )
    env.add(
        "--clock-offset-ms", type=int, default=0, help="skew this node's clock (for fault-injection tests)"
    )
    env.add("--log-level", choices=LOG_LEVELS, default="info", help="log verbosity")
    # TEST-ONLY, hidden: acknowledge writes before replicating them, and replicate them this long
    # later. It loses acknowledged writes when the node dies; the chaos suite uses it to prove that
    # its checker notices (tests/chaos, test_checker_catches_lost_writes_of_a_broken_build).
    parser.add_argument(
        "--unsafe-ack-before-replication",
        dest="unsafe_ack_delay",
        type=typed(parse_duration),
        default=0.0,
        help=argparse.SUPPRESS,
    )
    return parser


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    if args.tombstone_grace <= args.hint_max_age + args.anti_entropy_interval:
        raise StartupError(
            f"--tombstone-grace ({args.tombstone_grace:g}s) must exceed "
            f"--hint-max-age ({args.hint_max_age:g}s) plus "
            f"--anti-entropy-interval ({args.anti_entropy_interval:g}s), "
            "or replaying a hint could resurrect a deleted key"
        )
    if args.peers and args.node_id not in {p.node_id for p in args.peers}:
        raise StartupError(f"--peers must include this node ({args.node_id})")
    return NodeConfig(
        node_id=args.node_id,
        data_dir=args.data_dir,
        listen=args.listen,
        advertise=args.advertise,
        metrics_listen=args.metrics_listen,
        peers=args.peers,
        replication_factor=args.replication_factor,
        partitions=args.partitions,
        default_consistency=args.default_consistency,
        limits=Limits(args.max_key_bytes, args.max_value_bytes, args.max_batch_items, args.max_batch_bytes),
        map_size=args.map_size,
        max_map_size=args.max_map_size,
        replica_timeout=args.replica_timeout,
        hint_max_age=args.hint_max_age,
        hint_max_bytes=args.hint_max_bytes,
        anti_entropy_interval=args.anti_entropy_interval,
        tombstone_grace=args.tombstone_grace,
        clock_offset_ms=args.clock_offset_ms,
        unsafe_ack_delay=args.unsafe_ack_delay,
        grace_period=args.grace_period,
    )


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGTERM or SIGINT, then stop it gracefully."""
    node = Node(config)
    await node.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(node.failed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for waiting in waits:
        waiting.cancel()
    log.info("shutting down: finishing in-flight requests (up to %.0fs)", config.grace_period)
    await node.stop()
    if node.failure is not None:  # exit non-zero, so that the supervisor restarts the node
        raise node.failure


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "local-cluster":
        from kvnode.cli.local_cluster import main as local_cluster

        code: int = local_cluster(argv[1:])
        return code
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        asyncio.run(serve(config_from_args(args)))
    except (StartupError, KVError) as exc:
        print(f"kvnode: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

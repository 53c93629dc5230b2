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
import sys

from kvnode import __version__
from kvnode.cli.options import LOG_LEVELS, EnvArgs, setup_logging, typed
from kvnode.config import NodeConfig
from kvnode.core.errors import KVError, StartupError
from kvnode.node import Node

log = logging.getLogger("kvnode")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvnode",
        description="Run a kvnode storage node. Use 'kvnode local-cluster --help' for a local cluster.",
    )
    parser.add_argument("--version", action="version", version=f"kvnode {__version__}")
    env = EnvArgs(parser, "KVNODE_")
    for flag in NodeConfig.flags():
        env.add(flag.flag, type=typed(flag.parse), default=flag.default, show=flag.show, help=flag.help)
    env.add("--log-level", choices=LOG_LEVELS, default="info", help="log verbosity")
    return parser


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    return NodeConfig.from_flags(vars(args))


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

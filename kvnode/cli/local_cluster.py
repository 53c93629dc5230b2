"""``kvnode local-cluster``: N nodes as local processes, one command, no Kubernetes.

Each node gets ``<data-dir>/kv-<i>`` and a log file beside it, so starting again with the same
data directory brings the same cluster back with its data. Ctrl-C (or SIGTERM) stops every node
gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from kvnode.cli.options import LOG_LEVELS, EnvArgs, typed
from kvnode.client import Admin
from kvnode.client.reconfig import Reconfigurer
from kvnode.config import NodeConfig, Peer
from kvnode.core.errors import KVError, StartupError
from kvnode.core.units import parse_duration

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


@dataclass
class LocalNode:
    config: NodeConfig
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def address(self) -> str:
        return self.config.listen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvnode local-cluster",
        description="Run a cluster of kvnode processes on this machine. Ctrl-C stops them all.",
    )
    env = EnvArgs(parser, "KVNODE_CLUSTER_")
    env.add("--nodes", type=int, default=3, help="how many nodes")
    env.add("--data-dir", type=Path, default=Path("kvdata"), help="parent directory of the nodes' data")
    env.add("--host", default="127.0.0.1", help="address the nodes listen on")
    env.add("--base-port", type=int, default=7000, help="gRPC port of the first node; the others follow")
    env.add("--metrics-base-port", type=int, default=9100, help="metrics port of the first node; 0 turns off")
    env.add("--replication-factor", type=int, default=3, help="replicas per partition")
    env.add("--anti-entropy-interval", type=typed(parse_duration), default=60.0, help="between rounds")
    env.add("--log-level", choices=LOG_LEVELS, default="info", help="the nodes' log verbosity")
    return parser


def plan(args: argparse.Namespace) -> list[LocalNode]:
    addresses = [f"{args.host}:{args.base_port + i}" for i in range(args.nodes)]
    peers = tuple(Peer(f"kv-{i}", address) for i, address in enumerate(addresses))
    return [
        LocalNode(
            NodeConfig(
                node_id=f"kv-{i}",
                listen=address,
                data_dir=args.data_dir / f"kv-{i}",
                peers=peers,
                replication_factor=args.replication_factor,
                anti_entropy_interval=args.anti_entropy_interval,
                metrics_listen=f"{args.host}:{args.metrics_base_port + i}" if args.metrics_base_port else "",
            ),
            log_path=args.data_dir / f"kv-{i}.log",
        )
        for i, address in enumerate(addresses)
    ]


def node_command(node: LocalNode, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "kvnode", *node.config.argv(), "--log-level", args.log_level]


def wait_serving(admin: Admin, node: LocalNode, deadline: float) -> str | None:
    """None once the node reports SERVING; otherwise why it did not."""
    while time.monotonic() < deadline:
        assert node.process is not None
        if node.process.poll() is not None:
            return f"exited with code {node.process.returncode}"
        with contextlib.suppress(KVError):
            if admin.health(node.address, timeout=1.0):
                return None
        time.sleep(0.2)
    return f"not serving after {READY_TIMEOUT:.0f}s"


async def bootstrap(seeds: list[str]) -> None:
    """Give the cluster a real epoch: a node whose data directory is later wiped then rebuilds
    from its peers."""
    async with Reconfigurer.connect(seeds, progress=lambda _: None) as reconfig:
        await reconfig.bootstrap()


def stop_all(nodes: list[LocalNode]) -> None:
    running = [n for n in nodes if n.process is not None and n.process.poll() is None]
    for node in running:
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for node in running:
        assert node.process is not None
        try:
            node.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.nodes < 1:
        print("kvnode local-cluster: error: --nodes must be at least 1", file=sys.stderr)
        return 2
    try:
        nodes = plan(args)
    except StartupError as exc:
        print(f"kvnode local-cluster: error: {exc}", file=sys.stderr)
        return 2
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        for node in nodes:
            with node.log_path.open("ab") as log_file:
                node.process = subprocess.Popen(
                    node_command(node, args), stdout=log_file, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT
        with Admin.connect() as admin:
            for node in nodes:
                problem = wait_serving(admin, node, deadline)
                if problem is not None:
                    print(f"kvnode local-cluster: node {node.node_id} {problem}; its log ({node.log_path}):",
                          file=sys.stderr)  # fmt: skip
                    print(tail(node.log_path), file=sys.stderr)
                    return 1
        asyncio.run(bootstrap([n.address for n in nodes]))
        endpoints = ",".join(n.address for n in nodes)
        print(f"Local cluster of {len(nodes)} nodes is up, data in {args.data_dir}/:")
        for node in nodes:
            metrics_listen = node.config.metrics_listen
            metrics = f"  metrics http://{metrics_listen}/metrics" if metrics_listen else ""
            print(f"  {node.node_id}  {node.address}{metrics}  log {node.log_path}")
        print("\nTry it:")
        print(f"  kvctl --endpoints {endpoints} put hello world")
        print(f"  kvctl --endpoints {endpoints} get hello")
        print("\nPress Ctrl-C to stop the cluster.", flush=True)
        reported: set[str] = set()
        while not stopping:
            for node in nodes:
                assert node.process is not None
                code = node.process.poll()
                if code is not None and node.node_id not in reported:
                    reported.add(node.node_id)
                    print(f"node {node.node_id} exited with code {code}; see {node.log_path}", flush=True)
            if len(reported) == len(nodes):
                return 1
            time.sleep(0.2)
        print("Stopping the cluster...", flush=True)
        return 0
    finally:
        stop_all(nodes)

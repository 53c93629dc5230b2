"""``kvnode local-cluster``: N nodes as local processes, one command, no Kubernetes.

Each node gets ``<data-dir>/kv-<i>`` and a log file beside it, so starting again with the same
data directory brings the same cluster back with its data. Ctrl-C (or SIGTERM) stops every node
gracefully.

With ``--tls`` the nodes serve mutual TLS: a CA, a certificate per node and an admin client
certificate are made in ``<data-dir>/tls`` (once; later starts reuse them), and the kvctl line
printed at start-up uses them.
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
from kvnode.client import Admin, Credentials
from kvnode.client.reconfig import Reconfigurer
from kvnode.config import NodeConfig, Peer, Security
from kvnode.core.certs import ADMIN_ROLE, CertificateAuthority, KeyPair
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
    env.add(
        "--tls",
        action="store_true",
        default=False,
        help="serve mutual TLS, with a CA and certificates made in <data-dir>/tls",
    )
    return parser


@dataclass(frozen=True)
class LocalTls:
    """The files ``--tls`` makes: the CA, one certificate per node, and kvctl's admin one."""

    folder: Path

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.crt"

    def node(self, node_id: str) -> tuple[Path, Path]:
        return self.folder / f"{node_id}.crt", self.folder / f"{node_id}.key"

    @property
    def admin(self) -> tuple[Path, Path]:
        return self.folder / "admin.crt", self.folder / "admin.key"

    def make(self, node_ids: list[str], host: str) -> None:
        """Make what is missing: the CA first (kept, with its key, for later starts)."""
        ca_key = self.folder / "ca.key"
        if self.ca_file.exists() and ca_key.exists():
            ca = CertificateAuthority(KeyPair(self.ca_file.read_bytes(), ca_key.read_bytes()))
        else:
            ca = CertificateAuthority.create("kvnode local-cluster CA")
            ca.pair.write(self.folder, "ca")
        hosts = list(dict.fromkeys(["localhost", "127.0.0.1", host]))
        for node_id in node_ids:
            if not self.node(node_id)[0].exists():
                ca.node(node_id, hosts).write(self.folder, node_id)
        if not self.admin[0].exists():
            ca.issue("local-admin", [ADMIN_ROLE]).write(self.folder, "admin")

    def security(self, node_id: str) -> Security:
        cert, key = self.node(node_id)
        return Security(cert_file=cert, key_file=key, trusted_ca_file=self.ca_file)

    def credentials(self) -> Credentials:
        return Credentials.from_files(self.ca_file, *self.admin)

    def kvctl_flags(self) -> str:
        cert, key = self.admin
        return f"--cacert {self.ca_file} --cert {cert} --key {key}"


def plan(args: argparse.Namespace, tls: LocalTls | None = None) -> list[LocalNode]:
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
                security=tls.security(f"kv-{i}") if tls is not None else Security(),
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


async def bootstrap(seeds: list[str], credentials: Credentials | None = None) -> None:
    """Give the cluster a real epoch: a node whose data directory is later wiped then rebuilds
    from its peers."""
    async with Reconfigurer.connect(seeds, progress=lambda _: None, credentials=credentials) as reconfig:
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
    tls = LocalTls(args.data_dir / "tls") if args.tls else None
    try:
        if tls is not None:
            tls.make([f"kv-{i}" for i in range(args.nodes)], args.host)
        nodes = plan(args, tls)
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
        credentials = tls.credentials() if tls is not None else None
        with Admin.connect(credentials=credentials) as admin:
            for node in nodes:
                problem = wait_serving(admin, node, deadline)
                if problem is not None:
                    print(f"kvnode local-cluster: node {node.node_id} {problem}; its log ({node.log_path}):",
                          file=sys.stderr)  # fmt: skip
                    print(tail(node.log_path), file=sys.stderr)
                    return 1
        asyncio.run(bootstrap([n.address for n in nodes], credentials))
        endpoints = ",".join(n.address for n in nodes)
        if tls is not None:
            endpoints += " " + tls.kvctl_flags()
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

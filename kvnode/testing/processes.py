"""Real kvnode processes for tests, benchmarks and chaos runs.

A :class:`ProcessCluster` starts ``kvnode`` as separate OS processes on loopback, waits for them to
serve, and injects process faults: SIGKILL, SIGTERM, SIGSTOP/SIGCONT, restarts on the same data
directory. It never leaves a process behind: :meth:`ProcessCluster.close` (or the context manager)
kills whatever is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from kvnode.api.v1 import admin_pb2
from kvnode.client import Admin
from kvnode.config import NodeConfig, Security, parse_peers
from kvnode.testing.tls import TestPKI

_used_ports: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now and was not handed out before in this process."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _used_ports:
            _used_ports.add(port)
            return port


def wait_for(condition: object, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition()`` until it is truthy; raise TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except Exception as exc:  # noqa: BLE001 - the condition may fail until it holds
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(_timeout_message(timeout, what, last_error))


async def wait_until(condition: object, timeout: float, what: str, interval: float = 0.05) -> None:
    """The asyncio twin of :func:`wait_for`; ``condition`` may be sync or async."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()  # type: ignore[operator]
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
        except Exception as exc:  # noqa: BLE001 - the condition may fail until it holds
            last_error = exc
        await asyncio.sleep(interval)
    raise TimeoutError(_timeout_message(timeout, what, last_error))


def _timeout_message(timeout: float, what: str, last_error: Exception | None) -> str:
    return f"timed out after {timeout:.1f}s waiting for {what}" + (
        f" (last error: {last_error})" if last_error else ""
    )


@dataclass
class NodeProcess:
    node_id: str
    host: str
    port: int
    data_dir: Path
    log_path: Path
    metrics_port: int = 0
    peer_port: int = 0
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    netns: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def peer_entry(self) -> str:
        """Its ``--peers`` entry: ``ID=HOST:PORT``, with ``/PEERPORT`` when it has a peer port."""
        return f"{self.node_id}={self.address}" + (f"/{self.peer_port}" if self.peer_port else "")

    @property
    def metrics_address(self) -> str:
        return f"{self.host}:{self.metrics_port}" if self.metrics_port else ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ProcessCluster:
    """``size`` kvnode processes that know each other as peers.

    ``hosts`` gives each node its own loopback address (e.g. 127.0.0.11, 127.0.0.12, ...) when the
    caller needs them apart; by default all use 127.0.0.1 with distinct ports.

    ``env`` adds to the nodes' environment (e.g. ``KVNODE_FAILPOINTS``, see ``kvnode.failpoints``).
    ``source`` runs the kvnode of another checkout (its working directory and PYTHONPATH), e.g. the
    build before a change in an A/B benchmark; ``python -m`` takes the working directory first, so
    PYTHONPATH alone would not do it.
    ``ports`` fixes each node's gRPC port instead of picking free ones (needed when the hosts are not
    reachable from here at construction time, e.g. inside network namespaces). ``netns`` runs node i
    inside network namespace ``netns[i]`` (``ip netns exec``; needs root). ``peer_address(a, b)``
    says how node ``a`` reaches node ``b`` (its ``--peers`` entry for ``b``), e.g. through a
    fault-injecting proxy; by default every node uses ``b.address``.
    ``pki`` runs every node with mutual TLS from that test CA (the cluster's own admin client is
    ``kvstore:admin``); ``peer_ports`` gives each node a peer port (with ``pki``, peer mTLS too).
    """

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        replication_factor: int = 3,
        partitions: int = 64,
        extra_args: Sequence[str] = (),
        hosts: Sequence[str] | None = None,
        metrics: bool = False,
        ids: Sequence[str] | None = None,
        netns: Sequence[str] | None = None,
        ports: Sequence[int] | None = None,
        peer_address: Callable[[NodeProcess, NodeProcess], str] | None = None,
        env: Mapping[str, str] | None = None,
        source: Path | None = None,
        pki: TestPKI | None = None,
        peer_ports: bool = False,
    ) -> None:
        self.root = root
        self.pki = pki
        self.credentials = pki.admin() if pki is not None else None
        self.peer_address = peer_address
        self._admin: Admin | None = None
        self.replication_factor = replication_factor
        self.partitions = partitions
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.source = source
        root.mkdir(parents=True, exist_ok=True)
        names = list(ids) if ids else [f"kv-{i}" for i in range(size)]
        self.nodes: list[NodeProcess] = []
        for i, node_id in enumerate(names):
            host = hosts[i] if hosts else "127.0.0.1"
            self.nodes.append(
                NodeProcess(
                    node_id=node_id,
                    host=host,
                    port=ports[i] if ports else free_port(host),
                    data_dir=root / node_id,
                    log_path=root / f"{node_id}.log",
                    metrics_port=free_port(host) if metrics else 0,
                    peer_port=free_port(host) if peer_ports else 0,
                    netns=netns[i] if netns else "",
                )
            )

    # -- lookup ------------------------------------------------------------------------------

    def __getitem__(self, key: int | str) -> NodeProcess:
        if isinstance(key, int):
            return self.nodes[key]
        return next(n for n in self.nodes if n.node_id == key)

    @property
    def peers(self) -> str:
        return ",".join(n.peer_entry for n in self.nodes)

    def peers_for(self, node: NodeProcess) -> str:
        """The ``--peers`` value of ``node``: how it reaches every member (itself at its own address)."""
        if self.peer_address is None:
            return self.peers
        return ",".join(
            n.peer_entry if n is node else f"{n.node_id}={self.peer_address(node, n)}" for n in self.nodes
        )

    @property
    def endpoints(self) -> list[str]:
        return [n.address for n in self.nodes]

    # -- lifecycle ---------------------------------------------------------------------------

    def config(self, node: NodeProcess, peers: str | None = None) -> NodeConfig:
        security = Security(peer_listen=f"{node.host}:{node.peer_port}" if node.peer_port else "")
        if self.pki is not None:
            security = self.pki.security(node.node_id, security)
        return NodeConfig(
            node_id=node.node_id,
            listen=node.address,
            data_dir=node.data_dir,
            peers=parse_peers(self.peers_for(node) if peers is None else peers),
            replication_factor=self.replication_factor,
            partitions=self.partitions,
            metrics_listen=node.metrics_address,
            security=security,
        )

    def command(self, node: NodeProcess, peers: str | None = None) -> list[str]:
        command = [sys.executable, "-m", "kvnode", *self.config(node, peers).argv(), "--log-level", "info"]
        command += self.extra_args + node.extra_args
        if node.netns:
            command = ["ip", "netns", "exec", node.netns, *command]
        return command

    def start(
        self,
        index: int | str | Sequence[int | str] | None = None,
        *,
        wait: bool = True,
        peers: str | None = None,
    ) -> None:
        """Start one node, several, or all; by default wait until each serves. Nodes of a new
        cluster wait for a peer before serving, so start them together, not one by one."""
        if index is None:
            targets = self.nodes
        elif isinstance(index, (int, str)):
            targets = [self[index]]
        else:
            targets = [self[i] for i in index]
        for node in targets:
            if node.running:
                continue
            with node.log_path.open("ab") as log_file:
                node.process = subprocess.Popen(
                    self.command(node, peers), stdout=log_file, stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", **self._source_env(), **self.env},
                    cwd=self.source,
                )  # fmt: skip
        if wait:
            for node in targets:
                self.wait_serving(node)

    def _source_env(self) -> dict[str, str]:
        return {} if self.source is None else {"PYTHONPATH": str(self.source)}

    def wait_serving(self, node: NodeProcess | int | str, timeout: float = 30.0) -> None:
        node = node if isinstance(node, NodeProcess) else self[node]

        def serving() -> bool:
            if not node.running:
                raise RuntimeError(f"{node.node_id} exited:\n{node.log_tail()}")
            return self.admin.health(node.address, timeout=1.0)

        wait_for(serving, timeout, f"{node.node_id} to serve on {node.address}")

    def kill(self, index: int | str) -> None:
        """SIGKILL: no shutdown work at all, as when a machine dies."""
        self._signal(index, signal.SIGKILL)
        self._reap(self[index])

    def terminate(self, index: int | str, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the graceful exit; returns the exit code."""
        node = self[index]
        self._signal(index, signal.SIGTERM)
        assert node.process is not None
        return node.process.wait(timeout=timeout)

    def pause(self, index: int | str) -> None:
        self._signal(index, signal.SIGSTOP)

    def resume(self, index: int | str) -> None:
        self._signal(index, signal.SIGCONT)

    def restart(self, index: int | str, *, wait: bool = True) -> None:
        node = self[index]
        if node.running:
            self.kill(index)
        self.start(index, wait=wait)

    def _signal(self, index: int | str, sig: signal.Signals) -> None:
        node = self[index]
        if node.running:
            assert node.process is not None
            node.process.send_signal(sig)

    @staticmethod
    def _reap(node: NodeProcess) -> None:
        if node.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=10)

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        for node in self.nodes:
            if node.running:
                assert node.process is not None
                node.process.send_signal(signal.SIGCONT)
                node.process.kill()
            self._reap(node)

    def __enter__(self) -> ProcessCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- admin helpers -----------------------------------------------------------------------

    @property
    def admin(self) -> Admin:
        """An admin client for this cluster's nodes, made on first use and closed with it."""
        if self._admin is None:
            self._admin = Admin.connect(self.endpoints, credentials=self.credentials)
        return self._admin

    def status(self, index: int | str) -> admin_pb2.StatusResponse:
        return self.admin.status(self[index].address, timeout=10)

    def digests(self, index: int | str) -> dict[int, bytes]:
        reply = self.admin.partition_digests(self[index].address, timeout=30)
        return {d.partition: d.digest for d in reply.digests}

    def anti_entropy(self, index: int | str) -> admin_pb2.RunAntiEntropyResponse:
        return self.admin.run_anti_entropy(self[index].address, timeout=120)


def is_serving(address: str, timeout: float = 1.0) -> bool:
    """Whether the node at ``address`` reports SERVING; raises a ``KVError`` if it cannot answer."""
    with Admin.connect(timeout=timeout) as admin:
        return admin.health(address)


def metric(node: NodeProcess, name: str, **labels: str) -> float:
    """The sum of a metric's samples on a node started with metrics, over those with ``labels``."""
    with urllib.request.urlopen(f"http://{node.metrics_address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )

"""etcd for the comparison: Python stubs for its KV API, and a 3-member cluster on loopback.

The stubs come from ``bench/etcd_kv.proto`` (a trimmed copy of etcd's own proto, see there), compiled
once with ``grpc_tools.protoc`` into a temporary directory keyed by the file's hash. The cluster is
Debian's ``etcd`` binary (package ``etcd-server``) started by the benchmark itself: its own loopback
ports and data directories, no system service, stopped (SIGTERM, then SIGKILL) on close.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import grpc

from kvnode.testing.processes import free_port

PROTO = Path(__file__).with_name("etcd_kv.proto")
START_TIMEOUT = 30.0


def stubs() -> tuple[ModuleType, ModuleType]:
    """``(etcd_kv_pb2, etcd_kv_pb2_grpc)``, generated on first use."""
    digest = hashlib.sha256(PROTO.read_bytes()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"kvstore-bench-etcd-{digest}"
    if not (out / "etcd_kv_pb2_grpc.py").exists():
        from grpc_tools import protoc

        staging = Path(tempfile.mkdtemp(prefix="kvstore-bench-etcd-"))
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO.parent}",
                f"--python_out={staging}",
                f"--grpc_python_out={staging}",
                str(PROTO),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed on {PROTO} (exit code {code})")
        try:
            staging.rename(out)
        except OSError:  # another process generated it first
            shutil.rmtree(staging, ignore_errors=True)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module("etcd_kv_pb2"), importlib.import_module("etcd_kv_pb2_grpc")


def etcd_binary() -> str | None:
    return shutil.which("etcd")


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


class EtcdCluster:
    """``size`` etcd members on 127.0.0.1, each with its own data directory under ``root``."""

    def __init__(self, root: Path, size: int = 3, binary: str | None = None) -> None:
        found = binary or etcd_binary()
        if found is None:
            raise RuntimeError("etcd is not installed (Debian: apt-get install etcd-server)")
        self.binary = found
        self.root = root
        self.token = f"kvstore-bench-{secrets.token_hex(4)}"
        self.members = [
            EtcdMember(f"etcd-{i}", free_port(), free_port(), root / f"etcd-{i}", root / f"etcd-{i}.log")
            for i in range(size)
        ]

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(m.endpoint for m in self.members)

    def command(self, member: EtcdMember) -> list[str]:
        client_url = f"http://{member.endpoint}"
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        return [
            self.binary,
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", cluster,
            "--initial-cluster-token", self.token,
            "--initial-cluster-state", "new",
            "--log-level", "warn",
            "--logger", "zap",
        ]  # fmt: skip

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Settings from the environment (ETCD_*) would silently change what is measured.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        for member in self.members:
            with member.log_path.open("ab") as log:
                member.process = subprocess.Popen(
                    self.command(member), stdout=log, stderr=subprocess.STDOUT, env=env
                )
        deadline = time.monotonic() + START_TIMEOUT
        pb2, pb2_grpc = stubs()
        for member in self.members:
            self._wait_ready(member, deadline, pb2, pb2_grpc)

    def _wait_ready(self, member: EtcdMember, deadline: float, pb2: ModuleType, pb2_grpc: ModuleType) -> None:
        """Ready once a linearizable read succeeds: the cluster has a leader and this member knows it."""
        last: Exception | None = None
        with grpc.insecure_channel(member.endpoint) as channel:
            stub = pb2_grpc.KVStub(channel)
            while time.monotonic() < deadline:
                assert member.process is not None
                if member.process.poll() is not None:
                    raise RuntimeError(f"{member.name} exited; its log:\n{_tail(member.log_path)}")
                try:
                    stub.Range(pb2.RangeRequest(key=b"ready"), timeout=1.0)
                    return
                except grpc.RpcError as exc:
                    last = exc
                    time.sleep(0.2)
        raise TimeoutError(f"{member.name} not ready after {START_TIMEOUT:.0f}s: {last}")

    def close(self) -> None:
        running = [m for m in self.members if m.process is not None and m.process.poll() is None]
        for member in running:
            assert member.process is not None
            member.process.terminate()
        for member in running:
            assert member.process is not None
            try:
                member.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                member.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    member.process.wait(timeout=10)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""

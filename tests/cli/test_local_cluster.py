"""`kvnode local-cluster`, as the README's quick start runs it: up, first put and get, Ctrl-C, and
the same data after a restart on the same data directory."""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvnode.testing.processes import wait_for
from tests.cli.test_kvctl import kvctl

NODES = 3


def _free_run(count: int) -> int:
    """A base port with ``count`` free consecutive ports above it."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count >= 65536:
            continue
        try:
            held = []
            for port in range(base, base + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


class LocalCluster:
    """``kvnode local-cluster`` in a subprocess, its output collected as it comes."""

    def __init__(self, data_dir: Path, base_port: int, *extra: str) -> None:
        kvnode = Path(sys.executable).with_name("kvnode")  # the installed command, as a user types it
        command = [str(kvnode)] if kvnode.exists() else [sys.executable, "-m", "kvnode"]
        self.process = subprocess.Popen(
            [*command, "local-cluster", "--nodes", str(NODES), "--data-dir", str(data_dir),
             "--base-port", str(base_port), "--metrics-base-port", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.output: list[str] = []
        assert self.process.stdout is not None
        stdout = self.process.stdout
        self._reader = threading.Thread(target=lambda: self.output.extend(stdout), daemon=True)
        self._reader.start()
        self.endpoints = [f"127.0.0.1:{base_port + i}" for i in range(NODES)]

    @property
    def text(self) -> str:
        return "".join(self.output)

    def wait_up(self) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"local-cluster exited with {self.process.returncode}:\n{self.text}")
            return f"Local cluster of {NODES} nodes is up" in self.text

        wait_for(up, 90, "the local cluster to come up")

    def interrupt(self) -> int:
        """Ctrl-C: every node stops gracefully."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def base_port() -> int:
    return _free_run(NODES)


@pytest.fixture
def started() -> Iterator[list[LocalCluster]]:
    """Clusters a test started; any still running at its end is killed."""
    clusters: list[LocalCluster] = []
    yield clusters
    for cluster in clusters:
        cluster.kill()


def test_quick_start_put_get_stop_and_restart(
    tmp_path: Path, base_port: int, started: list[LocalCluster]
) -> None:
    data_dir = tmp_path / "kvdata"
    first = LocalCluster(data_dir, base_port)
    started.append(first)
    first.wait_up()
    assert f"kvctl --endpoints {','.join(first.endpoints)} put hello world" in first.text
    assert kvctl("put", "hello", "world", endpoints=first.endpoints).returncode == 0
    got = kvctl("get", "hello", endpoints=first.endpoints)
    assert (got.returncode, got.stdout) == (0, b"world")
    assert first.interrupt() == 0
    assert "Stopping the cluster" in first.text
    for i in range(NODES):
        assert (data_dir / f"kv-{i}" / "lmdb" / "data.mdb").exists()
        assert "stopped" in (data_dir / f"kv-{i}.log").read_text()

    again = LocalCluster(data_dir, base_port)
    started.append(again)
    again.wait_up()
    got = kvctl("get", "hello", "--consistency", "ALL", endpoints=again.endpoints)
    assert (got.returncode, got.stdout) == (0, b"world")
    assert again.interrupt() == 0


def test_a_node_that_cannot_start_is_reported_with_its_log(tmp_path: Path, base_port: int) -> None:
    with socket.socket() as taken:  # the first node's port is in use
        taken.bind(("127.0.0.1", base_port))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "kvnode", "local-cluster", "--nodes", str(NODES),
             "--data-dir", str(tmp_path / "kvdata"), "--base-port", str(base_port),
             "--metrics-base-port", "0"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert "node kv-0 exited with code 1" in result.stderr
    assert f"cannot listen on 127.0.0.1:{base_port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_tls_makes_a_ca_and_certificates_and_prints_the_kvctl_line_that_uses_them(
    tmp_path: Path, base_port: int, started: list[LocalCluster]
) -> None:
    data_dir = tmp_path / "kvdata"
    cluster = LocalCluster(data_dir, base_port, "--tls")
    started.append(cluster)
    cluster.wait_up()
    line = next(text for text in cluster.text.splitlines() if "put hello world" in text)
    args = shlex.split(line)
    assert args[0] == "kvctl" and "--cacert" in args and str(data_dir / "tls" / "ca.crt") in args
    assert kvctl(*args[1:]).returncode == 0
    got = kvctl(*args[1:-3], "get", "hello")
    assert (got.returncode, got.stdout) == (0, b"world")
    plaintext = kvctl("get", "hello", endpoints=cluster.endpoints)
    assert plaintext.returncode == 3 and b"serves TLS" in plaintext.stderr
    assert cluster.interrupt() == 0

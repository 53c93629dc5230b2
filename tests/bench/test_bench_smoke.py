"""The benchmark scripts still run: each in --smoke mode (a few seconds), checking only that it
finishes and prints its tables. Timing is never asserted here; bench/README.md explains the figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import echo_server
from kvnode.testing.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str, timeout: float = 180) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_loadgen_drives_the_echo_server() -> None:
    address = f"127.0.0.1:{free_port()}"
    echo = echo_server.start(address, 64)
    try:
        out = run_script("loadgen.py", address, "--op", "put", "-c", "8", "--duration", "0.5", "--procs", "2")
    finally:
        echo.terminate()
        echo.wait(timeout=10)
    assert "ops/s" in out and "p99" in out and "errors 0" in out


def test_single_node_smoke() -> None:
    out = run_script("single_node.py", "--smoke", "--quiet")
    for heading in ("Absolute figures", "Ratios", "Targets:", "Get node", "Put echo", "BatchPut node"):
        assert heading in out, out


@pytest.mark.parametrize("etcd", [False, True], ids=["kvnode-only", "with-etcd"])
def test_cluster_smoke(etcd: bool) -> None:
    from bench.etcd import etcd_binary

    if etcd and etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian package etcd-server)")
    out = run_script("cluster.py", "--smoke", "--quiet", *(() if etcd else ("--no-etcd",)))
    for heading in ("Absolute figures", "Ratios", "Targets:", "Put cluster QUORUM", "Get single"):
        assert heading in out, out
    assert ("etcd Put" in out) == etcd


def test_builds_smoke_against_this_same_checkout() -> None:
    """An A/A run (the baseline is this checkout): the script runs both builds and prints a ratio per
    case."""
    out = run_script("builds.py", "--smoke", "--quiet", "--baseline", str(ROOT))
    for heading in ("Ratios new/old", "Get", "Put (durable)", "cluster QUORUM Put", "cluster QUORUM Get"):
        assert heading in out, out


def test_builds_refuses_a_baseline_that_is_no_checkout(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "builds.py"), "--smoke", "--baseline", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "is not a checkout of this project" in done.stderr


def test_memory_smoke() -> None:
    """A tenth of each burst on one node: every probe runs, and the table compares each with the
    chart's memory limit."""
    out = run_script("memory.py", "--smoke", "--quiet", "--nodes", "1")
    for heading in (
        "chart limit (store.resources.limits.memory) 1Gi",
        "BatchWrite of 4 MiB",
        "client stops reading",
    ):
        assert heading in out, out
    assert "failed:" not in out and "DIED" not in out, out
    assert "probes past the chart's 1Gi limit on this build: 0" in out, out


def test_tls_smoke() -> None:
    out = run_script("tls.py", "--smoke", "--quiet")
    for heading in ("Absolute figures", "Targets:", "Get 3 nodes mTLS", "Put 1 node mTLS"):
        assert heading in out, out

"""The chaos tools on their own: key mixes, error classification, reports, the TCP proxy and the
network-namespace lab."""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from e2e.chaos import checker, cluster, netns, report, scenario
from e2e.chaos.faults import FaultLog
from e2e.chaos.history import OK, FaultEvent, History
from e2e.chaos.proxy import DELAY, DROP, ProxyMesh
from e2e.chaos.workload import KeyMix, WorkloadConfig, classify
from kvnode.api.v1 import kv_pb2, kv_pb2_grpc, types_pb2
from kvnode.testing.processes import free_port, wait_for
from tests.chaos.builders import history, r, w
from tests.chaos.conftest import MakeLab

# -- workload ---------------------------------------------------------------------------------------


def test_hot_cold_mix_sends_ninety_percent_to_ten_percent_of_keys() -> None:
    mix, rng = KeyMix("hotcold", 100), random.Random(1)
    picks = [mix.pick(rng) for _ in range(20000)]
    hot = sum(1 for p in picks if p < 10) / len(picks)
    assert 0.87 < hot < 0.93
    assert set(picks) == set(range(100))


def test_zipf_mix_favours_low_ranks() -> None:
    mix, rng = KeyMix("zipf", 100), random.Random(2)
    counts = Counter(mix.pick(rng) for _ in range(20000))
    assert counts[0] > counts[1] > counts[9] > counts[90]
    assert 0.15 < counts[0] / 20000 < 0.25  # 1/H(100) = 0.19


def test_uniform_mix_and_bad_names() -> None:
    mix, rng = KeyMix("uniform", 4), random.Random(3)
    assert set(Counter(mix.pick(rng) for _ in range(1000))) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="unknown key mix"):
        KeyMix("pareto", 10)
    with pytest.raises(ValueError, match="unknown consistency"):
        WorkloadConfig(levels=("SOME",))


def test_failed_calls_are_classified_conservatively() -> None:
    assert classify("read", grpc.StatusCode.DEADLINE_EXCEEDED, "") == "fail"
    assert classify("write", grpc.StatusCode.INVALID_ARGUMENT, "value too large") == "fail"
    assert classify("write", grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses") == "fail"
    # A coordinator that could not reach a quorum may still have applied the write somewhere.
    assert (
        classify("write", grpc.StatusCode.UNAVAILABLE, "QUORUM write: 1 of 3 replicas acknowledged") == "info"
    )
    assert classify("delete", grpc.StatusCode.DEADLINE_EXCEEDED, "") == "info"


# -- report -----------------------------------------------------------------------------------------


def test_report_figures_and_plot(tmp_path: Path) -> None:
    h = history(
        w("a", 0.0, 0.01, key="k", level="QUORUM", version=(1, "kv-0")),
        r("a", 0.1, 0.12, key="k", level="QUORUM", version=(1, "kv-0")),
        w("b", 0.2, 2.0, "info", key="k", level="QUORUM"),
        r("a", 3.0, 3.05, key="k", level="QUORUM", version=(1, "kv-0")),
        final={"k": "a"},
    )
    h.faults.append(FaultEvent("kill -9", "kv-1", 0.5, 2.5))
    h.faults.append(FaultEvent("clock skew", "kv-2", 0.0, None, "+1500 ms"))
    st = report.stats(h, 0.0, 3.05)
    assert st.ok == 3 and st.ops == 4
    assert st.unavailable.start == pytest.approx(0.12) and st.unavailable.end == pytest.approx(3.05)
    assert st.p50_ms == pytest.approx(20.0)
    result = checker.check_history(h)
    text = report.write(tmp_path, "unit", h, result, st, {"note": 1})
    assert "lost writes: 0" in text and "kill -9 kv-1" in text
    assert (tmp_path / "throughput.png").stat().st_size > 1000
    assert (tmp_path / "history.json").exists() and (tmp_path / "report.json").exists()


def test_longest_gap_and_percentiles() -> None:
    assert report.longest_gap([1.0, 2.0, 6.0], 0.0, 7.0).length == pytest.approx(4.0)
    assert report.longest_gap([], 1.0, 3.0).length == pytest.approx(2.0)
    assert report.percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert report.percentile(list(range(1, 101)), 99) == 99


# -- scenario ---------------------------------------------------------------------------------------


async def test_a_run_that_raises_saves_its_history_and_names_its_seed(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    """A fault script that raises mid-run: the error still names the seed and the folder, and the
    folder holds the history recorded so far and a report marked incomplete."""
    lab = make_lab(1)

    async def faults(log: FaultLog) -> None:
        await lab.faults.wait(0.5)
        raise RuntimeError("the fault script broke")

    cfg = WorkloadConfig(seed=424242, sessions=2, keys=5, levels=("QUORUM",))
    with pytest.raises(RuntimeError, match="the fault script broke") as raised:
        await scenario.run(
            "raises", lab.endpoints, cfg, duration=5, artifacts=tmp_path, faults=faults,
            clock=lab.clock, history=lab.history,
        )  # fmt: skip
    note = "\n".join(raised.value.__notes__)
    folder = tmp_path / "raises"
    assert "seed 424242" in note and "CHAOS_SEED=424242" in note and str(folder) in note
    saved = History.load(folder / "history.json")
    assert saved.meta["seed"] == 424242
    assert any(op.outcome == OK for op in saved.ops)  # the workload ran before the fault script broke
    data = json.loads((folder / "report.json").read_text())
    assert data["incomplete"] is True and data["ok"] is False and data["seed"] == 424242
    assert "RuntimeError: the fault script broke" in data["error"]
    assert "ERROR, incomplete (seed 424242)" in (folder / "report.txt").read_text()


async def test_healed_means_every_node_reaches_every_peer(make_lab: MakeLab) -> None:
    """A killed and restarted node counts as healed once the others' peer links reach it again
    (a read at ALL needs that); until then wait_healed names who misses whom."""
    lab = make_lab(3)
    names = [node.node_id for node in lab.cluster.nodes]
    await lab.faults.kill(2)
    with pytest.raises(grpc.aio.AioRpcError):  # the write to kv-2 fails: kv-0 marks it unreachable
        await put_at_all(lab.endpoints[0], b"healed/k")
    pending = await cluster.unreachable_peers(lab.endpoints)
    assert pending[names[0]] == [names[2]] and "no status" in pending[lab.endpoints[2]][0], pending
    with pytest.raises(TimeoutError, match=f"unreachable: .*'{names[0]}': \\['{names[2]}'\\]"):
        await cluster.wait_healed(lab.endpoints, timeout=0.5)
    await lab.faults.restart(2)
    await cluster.wait_healed(lab.endpoints, timeout=30)
    assert await cluster.unreachable_peers(lab.endpoints) == {}
    await put_at_all(lab.endpoints[0], b"healed/k")  # every replica answers now


async def put_at_all(endpoint: str, key: bytes) -> None:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        request = kv_pb2.PutRequest(key=key, value=b"v", consistency=types_pb2.CONSISTENCY_ALL)
        await kv_pb2_grpc.KVStub(channel).Put(request, timeout=10)


# -- proxy ------------------------------------------------------------------------------------------


def _connects(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    port = free_port()
    code = (
        "import socket,threading\n"
        f"s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('127.0.0.1',{port}))\n"
        "s.listen()\n"
        "def serve(c):\n"
        "    while (d:=c.recv(65536)): c.sendall(d)\n"
        "while True:\n"
        "    c,_=s.accept(); threading.Thread(target=serve,args=(c,),daemon=True).start()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_for(lambda: _connects(port), 10, "the echo server")
        yield port
    finally:
        proc.kill()
        proc.wait()


def roundtrip(port: int, timeout: float = 1.0) -> float:
    """Seconds for an echo through ``port``; raises on timeout."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(b"ping")
        assert conn.recv(16) == b"ping"
    return time.monotonic() - started


def test_proxy_passes_drops_delays_and_heals() -> None:
    with echo_server() as target, ProxyMesh() as mesh:
        port = mesh.add("a", "b", f"127.0.0.1:{target}")
        assert roundtrip(port) < 0.5
        # A connection open across the partition hangs, and is closed when the link heals.
        held = socket.create_connection(("127.0.0.1", port), timeout=1)
        mesh.set("a", "b", DROP)
        held.sendall(b"lost")
        with pytest.raises(TimeoutError):
            held.recv(16)
        with pytest.raises(TimeoutError):
            roundtrip(port, timeout=0.5)
        mesh.heal()
        held.settimeout(2)
        assert held.recv(16) == b""
        held.close()
        assert roundtrip(port) < 0.5
        mesh.set("a", "b", DELAY, delay=0.3)
        assert roundtrip(port) >= 0.3
        mesh.isolate("a", ["a"])  # isolating from nobody changes nothing
        assert roundtrip(port) >= 0.3
        mesh.set("a", "b", DROP)
        with pytest.raises(TimeoutError):
            roundtrip(port, timeout=0.5)


# -- network namespaces -----------------------------------------------------------------------------


def _ns_connect(ns: str, address: str, timeout: float = 1.0) -> bool:
    host, port = address.rsplit(":", 1)
    code = (
        "import socket,sys\n"
        "try:\n"
        f"    socket.create_connection(('{host}',{port}),timeout={timeout}).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    command = [sys.executable, "-c", code]
    if ns:
        command = ["ip", "netns", "exec", ns, *command]
    return subprocess.run(command, check=False, timeout=30).returncode == 0


needs_netns = pytest.mark.skipif(
    not netns.available()[0], reason=f"no network namespaces: {netns.available()[1]}"
)


@needs_netns
@pytest.mark.parametrize("method", ["nft", "route"])
def test_netns_partition_and_cleanup(method: str) -> None:
    if method == "nft" and not shutil.which("nft"):
        pytest.skip("nft is not installed (Debian package nftables)")
    lab = netns.NetnsLab(2)
    lab.method = method
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for i, ns in enumerate(lab.nodes):
            code = (
                "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                f"s.bind(('{lab.node_ips[i]}',{netns.NODE_PORT}));s.listen()\n"
                "while True: s.accept()[0].close()\n"
            )
            servers.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code]))
        for i in range(2):
            wait_for(
                lambda i=i: _ns_connect("", lab.address(i), 0.5), 10, f"node {i} reachable from the root"
            )
        assert _ns_connect(lab.nodes[0], lab.address(1))
        lab.isolate(0)
        assert not _ns_connect(lab.nodes[0], lab.address(1))
        assert not _ns_connect(lab.nodes[1], lab.address(0))
        assert _ns_connect("", lab.address(0)) and _ns_connect("", lab.address(1))  # clients still reach both
        lab.heal()
        assert _ns_connect(lab.nodes[0], lab.address(1))
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        lab.close()
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert lab.id not in listing
    assert (
        lab.root_link not in subprocess.run(["ip", "link"], capture_output=True, text=True, check=True).stdout
    )


@needs_netns
def test_stale_namespaces_of_dead_runs_are_removed() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    name = f"{netns.PREFIX}{dead.pid}-abcdef-hub"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in netns.cleanup_stale()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)

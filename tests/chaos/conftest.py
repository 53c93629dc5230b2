"""Fixtures for the chaos scenarios: clusters of real kvnode processes (on loopback, behind the
fault-injecting proxy, or in network namespaces), always torn down, and a directory for artifacts."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from e2e.chaos import netns
from e2e.chaos.faults import Faults, NetnsPartitioner, Partitioner, ProxyPartitioner
from e2e.chaos.history import History
from e2e.chaos.proxy import ProxyMesh
from e2e.chaos.workload import Clock
from kvnode.testing.processes import ProcessCluster
from kvnode.testing.tls import TestPKI

# The issue gives the chaos scenarios about 8 minutes of CI time in all; reported, never enforced.
BUDGET_SECONDS = 480.0


@dataclass
class SuiteTime:
    seconds: float = 0.0  # setup, call and teardown of every chaos scenario
    ran: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)


_suite_time = pytest.StashKey[SuiteTime]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add up the time of chaos-marked tests, so that the session ends with the suite's total."""
    rep = yield
    if item.get_closest_marker("chaos"):
        suite = item.config.stash.setdefault(_suite_time, SuiteTime())
        suite.seconds += rep.duration
        suite.ran.add(item.nodeid)
        if rep.skipped:
            suite.skipped.add(item.nodeid)
    return rep


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    suite = config.stash.get(_suite_time, None)
    if suite is None:
        return
    skipped = f", {len(suite.skipped)} skipped" if suite.skipped else ""
    over = ", OVER BUDGET" if suite.seconds > BUDGET_SECONDS else ""
    terminalreporter.write_line(
        f"chaos suite: {len(suite.ran - suite.skipped)} scenarios in {suite.seconds:.1f} s "
        f"(budget {BUDGET_SECONDS:.0f} s{skipped}){over}"
    )


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$CHAOS_ARTIFACTS, or a pytest temporary directory; each scenario writes a folder in it."""
    env = os.environ.get("CHAOS_ARTIFACTS")
    if env:
        path = Path(env).absolute()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("chaos")


class Lab:
    """A started cluster and the fault actions on it, with the clock and history they share."""

    def __init__(self, cluster: ProcessCluster, partitioner: Partitioner | None) -> None:
        from e2e.chaos.faults import FaultLog

        self.cluster = cluster
        self.clock = Clock()
        self.history = History()
        self.faults = Faults(cluster, FaultLog(self.history, self.clock), partitioner)

    @property
    def endpoints(self) -> list[str]:
        return self.cluster.endpoints


MakeLab = Callable[..., Lab]


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[MakeLab]:
    """``make_lab(size=3, network="loopback"|"proxy"|"netns", extra_args=(), node_args={i: [...]},
    env={...}, tls=False)``; ``env`` reaches every node (failpoints, see ``kvnode.failpoints``);
    ``tls``: client and peer mutual TLS on peer ports (loopback or proxy networks)."""
    cleanups: list[Callable[[], None]] = []

    def make(
        size: int = 3,
        *,
        network: str = "loopback",
        extra_args: tuple[str, ...] = (),
        node_args: dict[int, list[str]] | None = None,
        partitions: int = 64,
        env: dict[str, str] | None = None,
        tls: bool = False,
    ) -> Lab:
        root = tmp_path / f"cluster{len(cleanups)}"
        if tls and network != "loopback":
            raise ValueError("tls=True runs on the loopback network only")
        partitioner: Partitioner | None = None
        if network == "netns":
            ok, why = netns.available()
            if not ok:
                pytest.skip(f"network-namespace partitions need root and iproute2: {why}")
            lab = netns.NetnsLab(size)
            cleanups.append(lab.close)
            cluster = ProcessCluster(
                root, size, partitions=partitions, extra_args=extra_args, env=env,
                hosts=lab.node_ips, ports=[netns.NODE_PORT] * size, netns=lab.nodes,
            )  # fmt: skip
            partitioner = NetnsPartitioner(lab)
        else:
            pki = TestPKI(root / "pki") if tls else None
            cluster = ProcessCluster(
                root, size, partitions=partitions, extra_args=extra_args, env=env, pki=pki, peer_ports=tls
            )
            if network == "proxy":
                mesh = ProxyMesh()
                cleanups.append(mesh.close)
                for a in cluster.nodes:
                    for b in cluster.nodes:
                        if a is not b:
                            mesh.add(a.node_id, b.node_id, b.address)
                cluster.peer_address = lambda a, b: mesh.address(a.node_id, b.node_id)
                partitioner = ProxyPartitioner(mesh, [n.node_id for n in cluster.nodes])
        cleanups.append(cluster.close)
        for i, args in (node_args or {}).items():
            cluster[i].extra_args += args
        cluster.start()
        return Lab(cluster, partitioner)

    try:
        yield make
    finally:
        for cleanup in reversed(cleanups):
            cleanup()

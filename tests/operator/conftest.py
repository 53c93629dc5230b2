"""Fixtures for the operator tests: kmock as the API server, the simulated cluster, the operator;
and, for the step and unit tests, a store world over fakes.

The integration fixtures each run in their own thread with their own event loop; those tests are
plain synchronous functions that talk to the API server over HTTP (like kubectl) and to the nodes
over gRPC, and wait on conditions with timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import kopf
import kubernetes.config
import pytest
from kvoperator.config import AddressMode, OperatorConfig
from kvoperator.kube import KubeClient, login
from kvoperator.leader import LeaderElector, lease_namespace, run_as_leader

from kvnode.testing.processes import free_port
from tests.operator.apiserver import ApiServerThread
from tests.operator.kubectl import Kubectl
from tests.operator.sim import ClusterSim
from tests.operator.steps.world import World

NAMESPACE = "kv-test"
log = logging.getLogger("tests.operator")


def operator_config(tmp_path: Path) -> OperatorConfig:
    """Operator settings for tests: pod-IP member addresses (the "pods" are local processes), a
    local backup folder, and short intervals and thresholds."""
    backups = tmp_path / "backups"
    backups.mkdir(exist_ok=True)
    return OperatorConfig(
        address_mode=AddressMode.POD_IP,
        backup_path=str(backups),
        restore_path=str(backups),
        metrics_listen=f"127.0.0.1:{free_port()}",
        liveness="",
        namespaces=(NAMESPACE,),
        leader_election=False,  # test_leader.py turns it on
        reconcile_interval=0.5,
        admin_timeout=5.0,
        health_timeout=1.0,
        transfer_timeout=120.0,
        backup_timeout=60.0,
        unhealthy_pod_threshold=3.0,
        stuck_terminating_grace=1.0,
        watch_server_timeout=60.0,
        watch_client_timeout=90.0,
        connect_timeout=10.0,
    )


class OperatorThread:
    """``kopf.operator()`` in its own thread and event loop, stopped through kopf's stop flag."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.memo: kopf.Memo | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.led: bool | None = None  # with leader election: False once it lost the lead

    def start(self, *, wait_ready: bool = True) -> OperatorThread:
        """Start it; with leader election, a standby is not ready until it leads (wait_ready=False)."""
        import kvoperator.handlers  # noqa: F401 - registers the handlers

        self._stop.clear()
        self._ready.clear()
        self.led = None
        self.memo = kopf.Memo(config=self.config)
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)
        self._thread.start()
        if wait_ready and not self._ready.wait(30):
            raise RuntimeError(f"the operator did not start: {self.error}")
        return self

    def _main(self) -> None:
        settings = kopf.OperatorSettings()
        settings.process.ultimate_exiting_timeout = None  # never SIGKILL the test process

        async def operate(stop_flag: threading.Event) -> None:
            await kopf.operator(
                namespaces=list(self.config.namespaces),
                standalone=True,
                settings=settings,
                memo=self.memo,
                stop_flag=stop_flag,
                ready_flag=self._ready,
            )

        async def main() -> None:
            """As the command does (kvoperator.cli.run): kopf runs only while this one leads."""
            namespace = lease_namespace(self.config)
            if namespace is None:
                await operate(self._stop)
                return
            client = KubeClient(login(), timeout=self.config.connect_timeout)
            try:
                elector = LeaderElector.from_config(client, self.config, namespace)
                self.led = await run_as_leader(elector, operate, self._stop)
            finally:
                await client.close()

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
            log.exception("the operator failed")
            self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            assert not self._thread.is_alive(), "the operator did not stop"
        self._thread = None

    @property
    def ctx(self):  # type: ignore[no-untyped-def]
        assert self.memo is not None
        return self.memo["ctx"]


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServerThread]:
    server = ApiServerThread().start()
    kubeconfig = str(server.write_kubeconfig(tmp_path / "kubeconfig"))
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    # The kubernetes library reads $KUBECONFIG once, when it is imported (which collection may
    # already have done): its login (kopf's and the operator's) must find this test's server.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", kubeconfig)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubectl(api: ApiServerThread) -> Kubectl:
    client = Kubectl(api.url)
    client.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    )
    return client


@pytest.fixture
def sim(kubectl: Kubectl, tmp_path: Path) -> Iterator[ClusterSim]:
    cluster = ClusterSim(kubectl, NAMESPACE, tmp_path / "cluster").start()
    try:
        yield cluster
    finally:
        cluster.stop()
    assert not cluster.violations, cluster.violations


@pytest.fixture
def config(tmp_path: Path) -> OperatorConfig:
    return operator_config(tmp_path)


@pytest.fixture
def operator(api: ApiServerThread, config: OperatorConfig) -> Iterator[OperatorThread]:
    runner = OperatorThread(config).start()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture
def world() -> World:
    """A store over the fakes (steps/world.py, steps/fakes.py): no API server, no nodes."""
    return World()

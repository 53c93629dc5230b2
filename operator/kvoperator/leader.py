"""Leader election on a coordination.k8s.io/v1 Lease: of several operator replicas, one acts.

This follows client-go's ``tools/leaderelection`` (what controller-runtime operators use): a
candidate takes the Lease when it is free or its holder has not renewed it for
``leaseDurationSeconds``, measured on the candidate's own clock from when it last saw the record
change (so clock skew between nodes does not matter); every write carries the Lease's
resourceVersion, so of two candidates only one wins. The leader renews every retry period and
counts itself lost when it could not renew for the renew deadline, which is shorter than the lease
duration: it stops acting before anyone else may start. A leader that stops releases the Lease, so
a standby takes over at once. A lost leader's process exits (as controller-runtime's does) and
Kubernetes restarts it as a standby.

kopf's own peering would also do, but it pauses every operator (the leader too) whenever it sees a
peer of the same priority, and needs its own CRDs; a Lease needs only a Role in one namespace.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvoperator import kube
from kvoperator.config import OperatorConfig

log = logging.getLogger(__name__)

LEASES = kube.Resource("coordination.k8s.io", "v1", "leases")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _micro_time(when: datetime.datetime | None = None) -> str:
    """A metav1.MicroTime: RFC 3339 with microseconds."""
    return (when or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def identity() -> str:
    """This replica's name in the Lease: its pod name (the hostname) and a random suffix, so a
    restarted container never mistakes its predecessor's Lease for its own."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def lease_namespace(config: OperatorConfig) -> str | None:
    """Where the Lease lives: the configured namespace, else the pod's own (from its service
    account); None outside a cluster, or when leader election is off."""
    if not config.leader_election:
        return None
    if config.leader_election_namespace:
        return config.leader_election_namespace
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


@dataclass
class LeaderElector:
    """One candidate for the Lease ``namespace/name``."""

    client: kube.KubeApi
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _observed: tuple[Any, ...] | None = field(default=None, init=False)
    _observed_at: float = field(default=0.0, init=False)
    _held: bool = field(default=False, init=False)

    @classmethod
    def from_config(cls, client: kube.KubeApi, config: OperatorConfig, namespace: str) -> LeaderElector:
        return cls(
            client,
            namespace,
            config.lease_name,
            identity(),
            lease_duration=config.lease_duration,
            renew_deadline=config.lease_renew_deadline,
            retry_period=config.lease_retry_period,
        )

    @property
    def is_leader(self) -> bool:
        return self._held

    def _spec(self, acquire: bool, transitions: int) -> dict[str, Any]:
        now = _micro_time()
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "renewTime": now,
        }
        if acquire:
            spec.update(acquireTime=now, leaseTransitions=transitions)
        return spec

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True if this candidate holds the Lease now."""
        try:
            lease = await self.client.get(LEASES, self.namespace, self.name)
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(True, 0),
                }
                await self.client.create(LEASES, self.namespace, body)
                return self._won()
            spec = lease.get("spec") or {}
            holder = str(spec.get("holderIdentity") or "")
            record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
            if record != self._observed:
                self._observed, self._observed_at = record, self.clock()
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if holder and holder != self.identity and self.clock() < self._observed_at + duration:
                self._held = False
                return False
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
            patch = {
                "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": self._spec(holder != self.identity, transitions),
            }
            await self.client.patch(LEASES, self.namespace, self.name, patch)
            return self._won()
        except kube.Conflict:
            return False  # another candidate wrote first
        except (kube.ApiError, OSError, TimeoutError) as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False

    def _won(self) -> bool:
        if not self._held:
            log.info("lease %s/%s: %s is the leader", self.namespace, self.name, self.identity)
        self._held = True
        return True

    async def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait until this candidate leads (True), or until ``stop`` is set (False)."""
        logged = False
        while not (stop is not None and stop.is_set()):
            if await self.try_acquire_or_renew():
                return True
            if not logged:
                log.info("lease %s/%s: held by %s; standing by", self.namespace, self.name, self._observed)
                logged = True
            await asyncio.sleep(self.retry_period)
        return False

    async def hold(self) -> None:
        """Renew the Lease; return once leadership is lost (another holder, or no renewal within
        the renew deadline)."""
        renewed = self.clock()
        while True:
            await asyncio.sleep(self.retry_period)
            if await self.try_acquire_or_renew():
                renewed = self.clock()
                continue
            other = self._observed is not None and self._observed[0] not in ("", self.identity)
            if other or self.clock() - renewed > self.renew_deadline:
                self._held = False
                log.error(
                    "lease %s/%s: leadership lost (holder %s)", self.namespace, self.name, self._observed
                )
                return

    async def release(self) -> None:
        """Give the Lease up (client-go's ReleaseOnCancel), so a standby need not wait it out."""
        if not self._held:
            return
        self._held = False
        try:
            lease = await self.client.get(LEASES, self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            patch = {
                "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": _micro_time()},
            }
            await self.client.patch(LEASES, self.namespace, self.name, patch)
        except (kube.ApiError, OSError, TimeoutError) as exc:
            log.warning("lease %s/%s: could not release it: %s", self.namespace, self.name, exc)


async def run_as_leader(
    elector: LeaderElector,
    work: Callable[[threading.Event], Coroutine[Any, Any, object]],
    stop: threading.Event,
) -> bool:
    """Wait to lead, then run ``work(stop)`` while leading. True when the work ended by itself or
    ``stop`` was set; False when leadership was lost (``stop`` is then set, the work awaited, and
    the caller should exit non-zero)."""
    if not await elector.acquire(stop):
        return True
    loop = asyncio.get_running_loop()
    working: asyncio.Task[object] = loop.create_task(work(stop))
    holding = loop.create_task(elector.hold())
    await asyncio.wait({working, holding}, return_when=asyncio.FIRST_COMPLETED)
    if holding.done() and not working.done():
        stop.set()
        await working
        return False
    holding.cancel()
    await asyncio.gather(holding, return_exceptions=True)
    await elector.release()
    working.result()
    return True

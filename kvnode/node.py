"""A kvnode process: storage, replication, the gRPC server and the background work, wired together.

Start-up order matters: claim the data directory, open the store and check it belongs to this node,
seed the clock from its high-water mark, restore the persisted membership, then serve.

A node whose store is new asks its peers for their membership before it answers reads. If the
cluster already has an epoch (the operator or ``kvctl member`` set one), the empty store means a
lost volume or a new member: the node rebuilds its partitions from its peers and reports
NOT_SERVING on the health service until it has. If every peer that answers is still at epoch 0,
this is a brand-new cluster and there is nothing to copy, unless the node set data aside at start
(stale or damaged, see ``kvnode.storage.datadir``): that data existed, so it rebuilds whatever the
epoch.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from prometheus_client import start_http_server

from kvnode import __version__
from kvnode.backup.encryption import load_key as load_encryption_key
from kvnode.backup.service import BackupService
from kvnode.backup.signing import load_key
from kvnode.cluster.antientropy import AntiEntropy
from kvnode.cluster.batching import InFlight
from kvnode.cluster.checks import RecordCheck
from kvnode.cluster.clock import HybridClock
from kvnode.cluster.coordinator import Coordinator
from kvnode.cluster.hints import HintedHandoff
from kvnode.cluster.links import PeerLink
from kvnode.cluster.local import LocalReplica
from kvnode.cluster.maintenance import Maintenance
from kvnode.cluster.roster import Roster
from kvnode.cluster.scan import Scanner
from kvnode.cluster.scrub import Scrubber
from kvnode.cluster.topology import Topology
from kvnode.cluster.transfer import TransferManager
from kvnode.config import NodeConfig
from kvnode.core.errors import KVError, StartupError
from kvnode.core.membership import Membership
from kvnode.core.names import parse_host_port
from kvnode.metrics import NodeMetrics
from kvnode.server.admin_service import AdminService
from kvnode.server.admission import Admission
from kvnode.server.confinement import BackupRoot
from kvnode.server.kv_service import KVService
from kvnode.server.replica_service import ReplicaService
from kvnode.server.rpc import instrument
from kvnode.server.security import PortSecurity
from kvnode.server.serving import Server
from kvnode.server.status import NodeStatus
from kvnode.storage.datadir import DataDirLock, open_store
from kvnode.storage.groupcommit import GroupCommitter
from kvnode.storage.ops import PutMeta, WriteOp
from kvnode.storage.schema import Meta

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL = 30.0
PROBE_INTERVAL = 1.0
PEER_WAIT = 1.0
CERT_CHECK = 10.0


class Node:
    """One kvnode: it assembles the parts, starts them in order, runs their background loops, and
    stops them in the reverse order. The parts decide; the node only wires and runs them.

    ``failed`` is set (and ``failure`` says why) when the node cannot go on: its storage writer
    process died. The command then stops the node and exits non-zero, so that its supervisor
    starts it again on the same data.
    """

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.metrics = NodeMetrics(config.node_id, __version__)
        self.failed = asyncio.Event()
        self.failure: KVError | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._problems: dict[str, str] = {}  # why the node cannot serve, by what found it
        self._short: set[asyncio.Task[None]] = set()
        self._serving = False
        self._stopped = False
        self._metrics_server: Any = None

    @property
    def port(self) -> int:
        """The port the gRPC server listens on (chosen by the system when --listen asked for 0)."""
        return self.server.port

    # -- start-up ----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self.security = PortSecurity(cfg, self.metrics)  # first: a bad certificate stops start-up here
        self._lock = DataDirLock(cfg.data_dir)
        try:
            self.storage, fresh, self._set_aside = open_store(
                cfg.data_dir,
                cfg.node_id,
                partitions=cfg.partitions,
                map_size=cfg.map_size,
                max_map_size=cfg.max_map_size,
                stale_after=cfg.tombstone_grace if len(cfg.peers) > 1 else None,
                rebuild_damaged=len(cfg.peers) > 1 and cfg.replication_factor > 1,
            )
            if self._set_aside is not None and self._set_aside.name.startswith("damaged-"):
                self.metrics.damaged_data_set_aside.set(1)
            await self._assemble(fresh)
        except BaseException:
            self._lock.release()
            raise

    async def _assemble(self, fresh: bool) -> None:
        cfg = self.config
        storage = self.storage
        self.clock = HybridClock(
            storage.get_meta(Meta.HLC) or 0,
            offset_ms=cfg.clock_offset_ms,
            max_ahead_ms=int(cfg.max_clock_offset * 1000),
        )
        self.committer = GroupCommitter(
            storage,
            observer=self.metrics,
            trailer=self._clock_high_water,
            on_failure=self._fail,
            on_health=lambda problem: self._health("storage", problem),
        )
        self.committer.start(asyncio.get_running_loop())
        membership = storage.get_meta(Meta.MEMBERSHIP) or cfg.initial_membership()
        if membership.partitions != storage.partitions:
            membership = Membership(
                membership.epoch, membership.members, membership.replication_factor, storage.partitions
            )
        await self.committer.submit(PutMeta.of(Meta.NODE_ID, cfg.node_id))
        await self.committer.submit(PutMeta.of(Meta.PARTITIONS, storage.partitions))
        self.metrics.watch_storage(storage.stats)
        self.metrics.watch_disk(cfg.data_dir)

        self.topology = Topology(
            cfg.node_id, membership, self._persist_membership, peers=lambda: self.roster.peers
        )
        check = RecordCheck(self.clock, max_value_bytes=cfg.limits.max_value_bytes)
        self.local = LocalReplica(cfg.node_id, storage, self.committer, check)
        self.in_flight = InFlight()  # client requests in progress: peer links batch harder when many
        self.roster = Roster(self.local, self._link)
        self.topology.on_change(self._membership_changed)
        self._membership_changed(membership)
        self.hints = HintedHandoff(
            storage,
            self.committer,
            self.roster,
            self.topology,
            self.clock,
            self.metrics,
            max_age=cfg.hint_max_age,
            max_bytes=cfg.hint_max_bytes,
        )
        self.coordinator = Coordinator(
            cfg.node_id,
            self.topology,
            self.roster,
            self.clock,
            self.hints,
            self.metrics,
            timeout=cfg.replica_timeout,
            in_flight=self.in_flight,
        )
        self.scanner = Scanner(self.topology, self.roster, timeout=cfg.replica_timeout)
        self.anti_entropy = AntiEntropy(
            cfg.node_id,
            storage,
            self.roster,
            self.topology,
            self.clock,
            self.metrics,
            tombstone_grace=cfg.tombstone_grace,
        )
        self.transfers = TransferManager(
            cfg.node_id, self.roster, self.topology, self.metrics, self.anti_entropy.horizon
        )
        self.backups = BackupService(
            cfg.node_id,
            storage,
            self.committer,
            self.topology,
            self.coordinator,
            self.metrics,
            load_key(cfg.backup_hmac_key_file) if cfg.backup_hmac_key_file else None,
            load_encryption_key(cfg.backup_encryption_key_file) if cfg.backup_encryption_key_file else None,
        )
        maintenance = Maintenance(self.committer, self.clock, self.anti_entropy.horizon, self.metrics)
        self.scrubber = Scrubber(
            cfg.node_id, storage, self.committer, self.roster, self.topology, self.anti_entropy, self.metrics
        )
        storage.report_corruption(self.scrubber.found)
        self.server = await self._serve()
        fresh = fresh and len(membership.members) > 1
        if fresh:
            self.local.rebuilding = True
            self.metrics.rebuilding.set(1)
            self._health("rebuild", "rebuilding its data from its peers")
        self._serving = True
        await self._publish_health()
        self._spawn(self._catch_up(fresh))
        self._spawn(self._every(cfg.hint_replay_interval, self.hints.replay_all))
        self._spawn(self._every(cfg.anti_entropy_interval, self.anti_entropy.run_round, jitter=True))
        self._spawn(self._every(MAINTENANCE_INTERVAL, maintenance.run))
        self._spawn(self.scrubber.run_repairs())
        if cfg.scrub_interval > 0:
            self._spawn(self._every(cfg.scrub_interval, self.scrubber.run_pass, jitter=True))
        self._spawn(self._every(PROBE_INTERVAL, self._probe_unreachable))
        if self.security.dials_with_tls:
            self._spawn(self._every(CERT_CHECK, self._renew_links_if_rotated))
        self._serve_metrics()
        log.info(
            "node %s serving on %s (epoch %d, %d members, %d partitions)%s",
            cfg.node_id,
            cfg.listen,
            membership.epoch,
            len(membership.members),
            storage.partitions,
            "; asking peers whether to rebuild" if fresh else "",
        )

    async def _serve(self) -> Server:
        cfg = self.config
        level = cfg.default_consistency
        status = NodeStatus(
            cfg.node_id,
            __version__,
            storage=self.storage,
            topology=self.topology,
            roster=self.roster,
            hints=self.hints,
            transfers=self.transfers,
            backups=self.backups,
        )
        admin = AdminService(
            cfg.node_id,
            status=status,
            membership=self.topology,
            transfers=self.transfers,
            repairs=self.anti_entropy,
            digests=self.storage,
            backups=self.backups,
            drain_seconds=cfg.replica_timeout * 2,
            backup_root=BackupRoot(cfg.security.backup_root),
        )
        admission = Admission(cfg.max_requests, cfg.max_request_memory, cfg.limits.grpc_message_bytes)
        self.metrics.watch_admission(admission)
        return await Server.start(
            self.security.client_port(self._replica_moved),
            cfg.limits,
            cfg.max_requests,
            kv=instrument(
                KVService(self.coordinator, self.scanner, cfg.limits, level), self.metrics, level, admission
            ),
            replica=instrument(
                ReplicaService(self.local, self.topology, self.clock, self.metrics, cfg.limits),
                self.metrics,
                level,
            ),
            admin=instrument(admin, self.metrics, level, admission),
            peer=self.security.peer_port(),
            reflect=cfg.security.reflection,
        )

    def _replica_moved(self) -> str:
        """This node's peer address once the membership records one (then Replica is no longer
        served on the client port), else empty."""
        member = self.topology.membership.member(self.config.node_id)
        return member.peer_address if member is not None else ""

    def _serve_metrics(self) -> None:
        listen = self.config.metrics_listen
        if not listen:
            return
        host, port = parse_host_port(listen, what="--metrics-listen")
        tls = self.security.metrics_tls
        try:
            self._metrics_server, _ = start_http_server(
                port,
                addr=host,
                registry=self.metrics.registry,
                certfile=str(tls.cert_path) if tls is not None else None,
                keyfile=str(tls.key_path) if tls is not None else None,
            )
        except OSError as exc:
            raise StartupError(f"cannot serve metrics on {listen}: {exc.strerror}") from None
        if tls is not None:  # a renewed certificate is taken for the next scrapes' handshakes
            context = self._metrics_server.socket.context
            self._spawn(self._every(CERT_CHECK, lambda: tls.reload_into(context)))

    # -- the parts' hooks --------------------------------------------------------------------

    def _health(self, source: str, problem: str | None) -> None:
        """Note why the node as a whole cannot serve (``problem``), or that ``source``'s reason is
        gone; gRPC health says NOT_SERVING while any reason stands."""
        if problem is None:
            self._problems.pop(source, None)
        else:
            self._problems[source] = problem
        if self._serving:  # before the server starts, start-up publishes what was noted
            self._spawn(self._publish_health(), keep=False)

    async def _publish_health(self) -> None:
        await self.server.set_node_serving(not self._problems)

    def _fail(self, error: KVError) -> None:
        self.failure = error
        self.failed.set()

    def _clock_high_water(self) -> list[WriteOp[Any]]:
        """Every commit also stores the clock, so it stays monotonic across restarts."""
        return [PutMeta.of(Meta.HLC, self.clock.last)]

    async def _persist_membership(self, membership: Membership) -> None:
        await self.committer.submit(PutMeta.of(Meta.MEMBERSHIP, membership))

    def _membership_changed(self, membership: Membership) -> None:
        self.roster.sync(membership)
        self.metrics.membership_changed(membership, len(self.topology.placement.owned(self.config.node_id)))

    def _link(self, member_id: str, address: str) -> PeerLink:
        return PeerLink(
            member_id,
            address,
            node_id=self.config.node_id,
            clock=self.clock,
            epoch=lambda: self.topology.epoch,
            adopt=self.topology.adopt,
            timeout=self.config.replica_timeout,
            metrics=self.metrics,
            in_flight=self.in_flight,
            credentials=self.security.dial_credentials(),
            server_name=self.config.security.peer_server_name,
        )

    # -- background work ---------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], *, keep: bool = True) -> None:
        """Run ``coro`` in the background; ``keep``: it runs until the node stops (else it is a
        short one, forgotten once done)."""
        task = asyncio.get_running_loop().create_task(coro)
        if keep:
            self._tasks.append(task)
        else:
            self._short.add(task)
            task.add_done_callback(self._short.discard)

    async def _every(
        self, interval: float, work: Callable[[], Awaitable[object]], *, jitter: bool = False
    ) -> None:
        while True:
            await asyncio.sleep(interval * (random.uniform(0.9, 1.1) if jitter else 1.0))
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s failed", getattr(work, "__qualname__", work))

    async def _catch_up(self, fresh: bool) -> None:
        """Catch up on membership changes made while this node was down; a fresh store waits for a
        peer to answer, then rebuilds if the cluster already existed."""
        while not await self.topology.catch_up(self.roster.peers) and fresh:
            log.info("waiting for a peer to answer before serving reads")
            await asyncio.sleep(PEER_WAIT)
        if not fresh:
            return
        if self.topology.epoch > 0 or self._set_aside is not None:  # set-aside data existed: copy it
            self.transfers.start_rebuild()
            await self.transfers.wait()
            log.info("rebuild finished: %d records copied", self.transfers.status.records_copied)
        self.local.rebuilding = False
        self.metrics.rebuilding.set(0)
        self._health("rebuild", None)

    async def _renew_links_if_rotated(self) -> None:
        """A renewed certificate reaches the peers on new links; calls on the old ones finish."""
        if self.security.dial_rotated():
            log.info("the certificate for dialing peers changed: opening new links to the peers")
            self.roster.renew(self.topology.membership, grace=2 * self.config.replica_timeout)

    async def _probe_unreachable(self) -> None:
        """Ask peers marked unreachable for their membership: an idle link learns that a peer is
        back (and any newer epoch it holds) without waiting for client traffic."""
        await self.topology.catch_up([p for p in self.roster.peers if not p.reachable])

    # -- shutdown ----------------------------------------------------------------------------

    async def stop(self, grace: float | None = None) -> None:
        """Finish in-flight requests (up to ``grace`` seconds), then close everything cleanly. Each
        wait is bounded, so a stuck disk cannot hold up a shutdown for long: writes still waiting
        then fail, and ``failure`` says so."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.grace_period if grace is None else grace
        await self.server.stop(grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.coordinator.close()
        await self.transfers.close()
        await asyncio.gather(*self._short, return_exceptions=True)
        await self.hints.close(timeout=grace)
        await self.roster.close()
        await self.committer.close(timeout=max(grace, 1.0))
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self.storage.close()
        self._lock.release()
        log.info("node %s stopped", self.config.node_id)

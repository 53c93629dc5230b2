"""A kvnode process: storage, replication, the gRPC server and the background work, wired together.

Start-up order matters: claim the data directory, open the store and check it belongs to this node,
seed the clock from its high-water mark, restore the persisted membership, then serve.

A node whose store is new asks its peers for their membership before it answers reads. If the
cluster already has an epoch (the operator or ``kvctl member`` set one), the empty store means a
lost volume or a new member: the node rebuilds its partitions from its peers and reports
NOT_SERVING on the health service until it has. If every peer that answers is still at epoch 0,
this is a brand-new cluster and there is nothing to copy. A node that was away longer than the
tombstone grace period has its old data set aside and rebuilds, because replaying that data could
resurrect deletes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from kvnode import __version__, backup
from kvnode.api.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    kv_pb2,
    kv_pb2_grpc,
    replica_pb2,
    replica_pb2_grpc,
    types_pb2,
)
from kvnode.cluster.antientropy import AntiEntropy
from kvnode.cluster.batching import Load
from kvnode.cluster.clock import HybridClock, physical_ms
from kvnode.cluster.coordinator import Coordinator
from kvnode.cluster.hints import HintedHandoff
from kvnode.cluster.peers import ReplicaSet
from kvnode.cluster.replicas import LocalReplica, PeerLink
from kvnode.cluster.scan import Scanner
from kvnode.cluster.topology import Topology
from kvnode.cluster.transfer import TransferManager
from kvnode.config import NodeConfig
from kvnode.core.errors import FailedPrecondition, KVError, StartupError
from kvnode.core.levels import Level
from kvnode.core.membership import Membership
from kvnode.core.names import new_backup_id, parse_host_port
from kvnode.core.records import Record
from kvnode.metrics import NodeMetrics
from kvnode.server.admin_service import AdminService
from kvnode.server.kv_service import KVService
from kvnode.server.replica_service import ReplicaService
from kvnode.storage.datadir import DataDirLock, check_node_id
from kvnode.storage.engine import Storage
from kvnode.storage.groupcommit import GroupCommitter, Op

log = logging.getLogger(__name__)

_U64 = struct.Struct(">Q")
MAINTENANCE_INTERVAL = 30.0
PROBE_INTERVAL = 1.0
GC_BATCH = 1000
SERVICE_NAMES = (
    kv_pb2.DESCRIPTOR.services_by_name["KV"].full_name,
    replica_pb2.DESCRIPTOR.services_by_name["Replica"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
)


def server_options(config: NodeConfig) -> list[tuple[str, Any]]:
    size = max(config.limits.grpc_message_bytes, 64 * 1024 * 1024)
    return [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.so_reuseport", 0),
    ]


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.version = __version__
        self.default_level = Level.parse(config.default_consistency)
        self.metrics = NodeMetrics(config.node_id, __version__)
        self.last_backup_unix = 0
        self.port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.failed = asyncio.Event()  # set when the node cannot go on (its storage writer died)
        self.failure: KVError | None = None
        self._stopped = False
        self._metrics_server: Any = None

    # -- start-up ----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self._lock = DataDirLock(cfg.data_dir)
        try:
            fresh = self._open_storage()
            await self._assemble(fresh)
        except BaseException:
            self._lock.release()
            raise

    def _open_storage(self) -> bool:
        """Open (or create) the store; returns True when it holds no data from before."""
        cfg = self.config
        path = cfg.data_dir / "lmdb"
        fresh = not (path / "data.mdb").exists()
        self.storage = self._storage_at(path)
        check_node_id(cfg.data_dir, self.storage.get_meta("node_id"), cfg.node_id)
        alive = self.storage.get_meta("alive_ms")
        if not fresh and alive is not None and len(cfg.peers) > 1:
            away = time.time() - _U64.unpack(alive)[0] / 1000
            if away > cfg.tombstone_grace:
                self.storage.close()
                aside = cfg.data_dir / f"stale-{int(time.time())}"
                path.rename(aside)
                log.warning(
                    "this node was away for %.0fs, longer than the tombstone grace period (%.0fs); "
                    "its data was moved to %s and it will rebuild from its peers",
                    away,
                    cfg.tombstone_grace,
                    aside,
                )
                self.storage = self._storage_at(path)
                fresh = True
        return fresh

    def _storage_at(self, path: Path) -> Storage:
        cfg = self.config
        storage = Storage(
            path, partitions=cfg.partitions, map_size=cfg.map_size, max_map_size=cfg.max_map_size
        )
        stored = storage.get_meta("partitions")
        if stored and _U64.unpack(stored)[0] != cfg.partitions:
            storage.partitions = _U64.unpack(stored)[0]
            log.warning(
                "data dir is laid out in %d partitions; ignoring --partitions=%d",
                storage.partitions,
                cfg.partitions,
            )
        return storage

    async def _assemble(self, fresh: bool) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        storage = self.storage
        hlc_floor = storage.get_meta("hlc")
        self.clock = HybridClock(_U64.unpack(hlc_floor)[0] if hlc_floor else 0, offset_ms=cfg.clock_offset_ms)
        self.committer = GroupCommitter(
            storage, observer=self.metrics, trailer=self._clock_high_water, on_failure=self._fail
        )
        self.committer.start(loop)
        stored = storage.get_meta("membership")
        membership = (
            Membership.from_proto(types_pb2.Membership.FromString(stored))
            if stored
            else cfg.initial_membership()
        )
        if membership.partitions != storage.partitions:
            membership = Membership(
                membership.epoch, membership.members, membership.replication_factor, storage.partitions
            )
        await self.committer.submit("put_meta", "node_id", cfg.node_id.encode())
        await self.committer.submit("put_meta", "partitions", _U64.pack(storage.partitions))
        backup_meta = storage.get_meta("last_backup")
        self.last_backup_unix = _U64.unpack(backup_meta)[0] if backup_meta else 0
        self.metrics.last_backup.set(self.last_backup_unix)
        self.metrics.watch_storage(storage.stats)
        self.metrics.watch_disk(cfg.data_dir)

        self.topology = Topology(cfg.node_id, membership, self._persist_membership)
        self.local = LocalReplica(cfg.node_id, storage, self.committer)
        self.load = Load()  # client requests in progress: peer links batch harder when it is high
        self.replicas = ReplicaSet(self.local, self._link)
        self.replicas.sync(membership)
        self.topology.on_change(self._membership_changed)
        self._membership_changed(membership)
        self.hints = HintedHandoff(
            storage,
            self.committer,
            self.replicas,
            self.topology,
            self.clock,
            self.metrics,
            max_age=cfg.hint_max_age,
            max_bytes=cfg.hint_max_bytes,
        )
        self.coordinator = Coordinator(
            cfg.node_id,
            self.topology,
            self.replicas,
            self.clock,
            self.hints,
            self.metrics,
            timeout=cfg.replica_timeout,
            load=self.load,
            unsafe_ack_delay=cfg.unsafe_ack_delay,
        )
        self.scanner = Scanner(self.topology, self.replicas, timeout=cfg.replica_timeout)
        self.anti_entropy = AntiEntropy(
            cfg.node_id,
            storage,
            self.replicas,
            self.topology,
            self.clock,
            self.metrics,
            tombstone_grace=cfg.tombstone_grace,
        )
        self.transfers = TransferManager(
            cfg.node_id, self.replicas, self.topology, self.metrics, self.anti_entropy.horizon
        )
        await self._serve()
        fresh = fresh and len(membership.members) > 1
        if fresh:
            self.local.rebuilding = True
            self.metrics.rebuilding.set(1)
            await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        self._spawn(self._startup(fresh))
        self._spawn(self._every(cfg.hint_replay_interval, self.hints.replay_all))
        self._spawn(self._every(cfg.anti_entropy_interval, self.anti_entropy.run_round, jitter=True))
        self._spawn(self._every(MAINTENANCE_INTERVAL, self._maintain))
        self._spawn(self._every(PROBE_INTERVAL, self._probe_unreachable))
        if cfg.metrics_listen:
            host, port = parse_host_port(cfg.metrics_listen, what="--metrics-listen")
            try:
                self._metrics_server, _ = start_http_server(port, addr=host, registry=self.metrics.registry)
            except OSError as exc:
                raise StartupError(f"cannot serve metrics on {cfg.metrics_listen}: {exc.strerror}") from None
        log.info(
            "node %s serving on %s (epoch %d, %d members, %d partitions)%s",
            cfg.node_id,
            cfg.listen,
            membership.epoch,
            len(membership.members),
            storage.partitions,
            "; asking peers whether to rebuild" if fresh else "",
        )

    def _fail(self, error: KVError) -> None:
        self.failure = error
        self.failed.set()

    def _clock_high_water(self) -> list[Op]:
        """Every commit also stores the clock, so it stays monotonic across restarts."""
        return [("put_meta", ("hlc", _U64.pack(self.clock.last)))]

    async def _persist_membership(self, membership: Membership) -> None:
        data = membership.to_proto().SerializeToString()
        await self.committer.submit("put_meta", "membership", data)

    def _membership_changed(self, membership: Membership) -> None:
        self.replicas.sync(membership)
        self.metrics.epoch.set(membership.epoch)
        for state in ("ACTIVE", "JOINING", "LEAVING"):
            self.metrics.members.labels(state.lower()).set(
                sum(1 for m in membership.members if m.state.name == state)
            )
        self.metrics.partitions_owned.set(len(self.topology.placement.owned(self.config.node_id)))

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
            load=self.load,
        )

    async def _serve(self) -> None:
        cfg = self.config
        server = grpc.aio.server(options=server_options(cfg))
        kv_pb2_grpc.add_KVServicer_to_server(
            KVService(self.coordinator, self.scanner, cfg.limits, self.metrics, self.default_level), server
        )
        replica_pb2_grpc.add_ReplicaServicer_to_server(
            ReplicaService(self.local, self.topology, self.clock, self.metrics, self.default_level), server
        )
        admin_pb2_grpc.add_AdminServicer_to_server(AdminService(self), server)
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]  # stubs lack .aio
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME), server
        )
        parse_host_port(cfg.listen, what="--listen")
        try:
            self.port = server.add_insecure_port(cfg.listen)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise StartupError(f"cannot listen on {cfg.listen}: the address is in use or not local")
        await server.start()
        self._server = server
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    # -- background work ---------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def _every(self, interval: float, work: Any, *, jitter: bool = False) -> None:
        while True:
            await asyncio.sleep(interval * (random.uniform(0.9, 1.1) if jitter else 1.0))
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s failed", getattr(work, "__qualname__", work))

    async def _startup(self, fresh: bool) -> None:
        """Catch up on membership changes made while this node was down; a fresh store waits for a
        peer to answer, then rebuilds if the cluster already existed."""
        while not await self._learn_membership() and fresh:
            log.info("waiting for a peer to answer before serving reads")
            await asyncio.sleep(1.0)
        if not fresh:
            return
        if self.topology.epoch > 0:
            self.transfers.start_rebuild()
            await self.transfers.wait()
            log.info("rebuild finished: %d records copied", self.transfers.status.records_copied)
        self.local.rebuilding = False
        self.metrics.rebuilding.set(0)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)

    async def _probe_unreachable(self) -> None:
        """Ask peers marked unreachable for their membership: an idle link learns that a peer is
        back (and any newer epoch it holds) without waiting for client traffic."""
        await self._learn_membership([p for p in self.replicas.peers if not p.reachable])

    async def _learn_membership(self, peers: list[PeerLink] | None = None) -> bool:
        """Adopt the newest membership any peer holds. True if some peer answered (or none exist)."""
        peers = self.replicas.peers if peers is None else peers
        if not peers:
            return True
        results = await asyncio.gather(*(p.membership() for p in peers), return_exceptions=True)
        answers = [r for r in results if isinstance(r, types_pb2.Membership)]
        for answer in sorted(answers, key=lambda m: m.epoch, reverse=True)[:1]:
            await self.topology.adopt(answer)
        return bool(answers)

    async def _maintain(self) -> None:
        """Collect tombstones past the grace period, and note that this node is alive."""
        horizon = self.anti_entropy.horizon()
        while True:
            collected: int = await self.committer.submit("collect_tombstones", horizon, GC_BATCH)
            self.metrics.tombstones_collected.inc(collected)
            if collected < GC_BATCH:
                break
        now_ms = physical_ms(self.clock.wall())
        await self.committer.submit("put_meta", "alive_ms", _U64.pack(now_ms))

    # -- backups -----------------------------------------------------------------------------

    async def take_backup(self, directory: str, backup_id: str) -> backup.Manifest:
        membership = self.topology.membership
        try:
            manifest = await asyncio.to_thread(
                backup.take_snapshot,
                self.storage,
                directory,
                backup_id or new_backup_id(),
                node_id=self.config.node_id,
                epoch=membership.epoch,
                replication_factor=membership.replication_factor,
            )
        except OSError as exc:
            self.metrics.backups.labels("failed").inc()
            raise FailedPrecondition(f"cannot write backup to {directory}: {exc.strerror or exc}") from None
        self.last_backup_unix = manifest.created_unix
        self.metrics.last_backup.set(manifest.created_unix)
        self.metrics.backups.labels("ok").inc()
        await self.committer.submit("put_meta", "last_backup", _U64.pack(manifest.created_unix))
        return manifest

    async def restore(self, directory: str, backup_id: str, level: Level) -> tuple[int, int]:
        """Replay a backup through the write path. Returns (records replayed, distinct live keys)."""
        manifests, problems = await asyncio.to_thread(backup.verify, directory, backup_id)
        if problems:
            raise FailedPrecondition(f"backup {backup_id} failed verification: {'; '.join(problems)}")
        replayed = 0
        newest: dict[bytes, tuple[int, str, bool]] = {}
        for manifest in manifests:
            chunk: list[Record] = []
            for rec in backup.snapshot_records(Path(manifest.path)):
                chunk.append(rec)
                seen = newest.get(rec.key)
                if seen is None or (rec.version.hlc, rec.version.node_id) > seen[:2]:
                    newest[rec.key] = (rec.version.hlc, rec.version.node_id, rec.tombstone)
                if len(chunk) >= 500:
                    await self.coordinator.replicate_records(chunk, level)
                    replayed += len(chunk)
                    chunk = []
            if chunk:
                await self.coordinator.replicate_records(chunk, level)
                replayed += len(chunk)
        return replayed, sum(1 for _, _, tomb in newest.values() if not tomb)

    # -- shutdown ----------------------------------------------------------------------------

    async def stop(self, grace: float | None = None) -> None:
        """Finish in-flight requests (up to ``grace`` seconds), then close everything cleanly."""
        if self._stopped:
            return
        self._stopped = True
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.stop(self.config.grace_period if grace is None else grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transfers.close()
        await self.hints.close()
        await self.replicas.close()
        await self.committer.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self.storage.close()
        self._lock.release()
        log.info("node %s stopped", self.config.node_id)

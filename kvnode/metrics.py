"""Prometheus metrics of a node. docs/metrics.md describes each one.

Every node gets its own registry, so several nodes can live in one process (as in tests) and the
``/metrics`` page shows exactly one node. Label children are cached: looking one up per request
would cost more than the request's own bookkeeping.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kvnode.core.membership import Membership, MemberState

# The *_created series double the size of every scrape and no dashboard uses them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class AdmissionLoad(Protocol):
    """What the client requests in progress hold (``kvnode.server.admission.Admission``)."""

    in_progress: int
    bytes: int


class StorageStats(Protocol):
    """What the store reports at scrape time (``kvnode.storage.engine.StorageStats``)."""

    @property
    def records(self) -> int: ...
    @property
    def tombstones(self) -> int: ...
    @property
    def keys(self) -> int: ...
    @property
    def used_bytes(self) -> int: ...
    @property
    def map_size(self) -> int: ...


class _StorageCollector(Collector):
    """Reads LMDB statistics at scrape time, so they are never stale."""

    def __init__(self, stats: Callable[[], StorageStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            s = self._stats()
        except Exception:  # noqa: BLE001 - a closed store during shutdown must not break a scrape
            return
        yield GaugeMetricFamily(
            "kvnode_lmdb_entries", "Records in the data store, tombstones included.", s.records
        )
        yield GaugeMetricFamily("kvnode_keys", "Live keys stored on this node.", s.keys)
        yield GaugeMetricFamily("kvnode_tombstones", "Tombstones awaiting collection.", s.tombstones)
        yield GaugeMetricFamily("kvnode_lmdb_used_bytes", "Bytes of the LMDB map in use.", s.used_bytes)
        yield GaugeMetricFamily("kvnode_lmdb_map_size_bytes", "Current LMDB map size.", s.map_size)


class _DiskCollector(Collector):
    """Free and total space of the filesystem that holds the data directory, read at scrape time.
    LMDB's map grows until the disk is full, so this (not the map size) is what runs out."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            st = os.statvfs(self._path)
        except OSError:
            return
        yield GaugeMetricFamily(
            "kvnode_data_disk_free_bytes",
            "Bytes available to the node on the filesystem of its data directory.",
            st.f_bavail * st.f_frsize,
        )
        yield GaugeMetricFamily(
            "kvnode_data_disk_size_bytes",
            "Size of the filesystem that holds the node's data directory.",
            st.f_blocks * st.f_frsize,
        )


class NodeMetrics:
    """Every metric of one node, in a registry of its own."""

    def __init__(self, node_id: str, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        info = Gauge(
            "kvnode_info",
            "Constant 1, labelled with the node id and version.",
            ["node_id", "version"],
            registry=r,
        )
        info.labels(node_id, version).set(1)
        self.requests = Counter(
            "kvnode_requests",
            "Client requests by RPC, consistency level and status code.",
            ["method", "consistency", "code"],
            registry=r,
        )
        self.auth_refusals = Counter(
            "kvnode_auth_refusals",
            "Calls refused before their handler: UNAUTHENTICATED (no or unknown credentials) or "
            "PERMISSION_DENIED (a role missing), by RPC.",
            ["method", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "kvnode_request_duration_seconds",
            "Client request latency by RPC and consistency level.",
            ["method", "consistency"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_batch = Histogram(
            "kvnode_group_commit_batch_size",
            "Operations per group commit.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_latency = Histogram(
            "kvnode_group_commit_duration_seconds",
            "Time to run and fsync one group commit.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.replica_rpcs = Counter(
            "kvnode_replica_rpcs",
            "RPCs to peer replicas by peer, method and status code.",
            ["peer", "method", "code"],
            registry=r,
        )
        self.replica_batch = Histogram(
            "kvnode_replica_batch_size",
            "Items per replication RPC.",
            ["method"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.peer_up = Gauge(
            "kvnode_peer_up", "1 when the last RPC to the peer succeeded.", ["peer"], registry=r
        )
        self.hints_pending = Gauge(
            "kvnode_hints_pending", "Hinted writes waiting for a replica.", ["peer"], registry=r
        )
        self.hint_bytes = Gauge(
            "kvnode_hint_bytes", "Bytes of hinted writes waiting for a replica.", ["peer"], registry=r
        )
        self.hints_stored = Counter(
            "kvnode_hints_stored", "Writes kept as hints for a replica.", ["peer"], registry=r
        )
        self.hints_replayed = Counter(
            "kvnode_hints_replayed", "Hints delivered to their replica.", ["peer"], registry=r
        )
        self.hints_dropped = Counter(
            "kvnode_hints_dropped",
            "Hints dropped (expired, over the size bound, or not a member).",
            ["peer", "reason"],
            registry=r,
        )
        self.read_repairs = Counter("kvnode_read_repairs", "Stale replicas fixed by reads.", registry=r)
        self.clock_refusals = Counter(
            "kvnode_clock_refusals",
            "Messages and records refused because their clock was too far ahead (--max-clock-offset), "
            "by the node they came from.",
            ["peer"],
            registry=r,
        )
        self.refused_records = Counter(
            "kvnode_refused_records",
            "Records a replica refused to store, by the node that sent them and the reason.",
            ["peer", "reason"],
            registry=r,
        )
        self.ae_rounds = Counter("kvnode_anti_entropy_rounds", "Anti-entropy rounds completed.", registry=r)
        self.ae_partitions_differing = Counter(
            "kvnode_anti_entropy_partitions_differing",
            "Partitions whose digests differed from a peer's.",
            registry=r,
        )
        self.ae_repairs = Counter(
            "kvnode_anti_entropy_repairs",
            "Records copied by anti-entropy.",
            ["direction"],
            registry=r,
        )
        self.tombstones_collected = Counter(
            "kvnode_tombstones_collected",
            "Tombstones removed after the grace period.",
            registry=r,
        )
        self.transfer_records = Counter(
            "kvnode_transfer_records",
            "Records streamed by joins, rebuilds and decommissions.",
            ["kind"],
            registry=r,
        )
        self.epoch = Gauge("kvnode_membership_epoch", "The membership epoch this node holds.", registry=r)
        self.members = Gauge(
            "kvnode_members", "Members in this node's membership, by state.", ["state"], registry=r
        )
        self.partitions_owned = Gauge(
            "kvnode_partitions_owned", "Partitions this node serves reads for.", registry=r
        )
        self.rebuilding = Gauge(
            "kvnode_rebuilding", "1 while the node copies its data from peers.", registry=r
        )
        self.last_backup = Gauge(
            "kvnode_last_backup_timestamp_seconds",
            "Unix time of this node's last backup.",
            registry=r,
        )
        self.backups = Counter(
            "kvnode_backups", "Backups taken by this node, by result.", ["result"], registry=r
        )
        self.corrupt_records = Counter(
            "kvnode_corrupt_records",
            "Stored records found failing their checksum (never served), by what found them.",
            ["found_by"],
            registry=r,
        )
        self.corrupt_repairs = Counter(
            "kvnode_corrupt_repairs",
            "Corrupt copies replaced with an intact one from another replica, by what repaired them.",
            ["by"],
            registry=r,
        )
        self.scrub_records = Counter(
            "kvnode_scrub_records", "Records read and checked by the scrub.", registry=r
        )
        self.scrub_passes = Counter("kvnode_scrub_passes", "Scrub passes completed.", registry=r)
        self.scrub_unrepaired = Gauge(
            "kvnode_scrub_unrepaired_records",
            "Corrupt records the last scrub pass could not repair (no other replica had an intact copy).",
            registry=r,
        )
        self.scrub_digests_fixed = Counter(
            "kvnode_scrub_digests_fixed",
            "Partition digests the scrub found disagreeing with their intact records, and recomputed.",
            registry=r,
        )
        self.scrub_checksums_added = Counter(
            "kvnode_scrub_checksums_added",
            "Records written before checksums that the scrub gave one.",
            registry=r,
        )
        self.damaged_data_set_aside = Gauge(
            "kvnode_damaged_data_set_aside",
            "1 when this node started after setting its damaged data file aside (it then rebuilds).",
            registry=r,
        )
        self._request_children: dict[tuple[str, str, str], Counter] = {}
        self._latency_children: dict[tuple[str, str], Histogram] = {}

    def watch_storage(self, stats: Callable[[], StorageStats]) -> None:
        self.registry.register(_StorageCollector(stats))

    def watch_admission(self, load: AdmissionLoad) -> None:
        Gauge(
            "kvnode_requests_in_progress",
            "Client requests admitted and not yet ended (answer sent); capped by --max-requests.",
            registry=self.registry,
        ).set_function(lambda: load.in_progress)
        Gauge(
            "kvnode_request_bytes_in_progress",
            "Bytes the client requests in progress hold, requests and answers; capped by "
            "--max-request-memory.",
            registry=self.registry,
        ).set_function(lambda: load.bytes)

    def watch_disk(self, data_dir: Path) -> None:
        self.registry.register(_DiskCollector(data_dir))

    def membership_changed(self, membership: Membership, partitions_owned: int) -> None:
        self.epoch.set(membership.epoch)
        for state in MemberState:
            self.members.labels(state.name.lower()).set(
                sum(1 for m in membership.members if m.state == state)
            )
        self.partitions_owned.set(partitions_owned)

    def auth_refused(self, method: str, code: str) -> None:
        self.auth_refusals.labels(method, code).inc()

    def observe_request(self, method: str, consistency: str, code: str, seconds: float) -> None:
        key = (method, consistency, code)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(*key)
        counter.inc()
        lkey = (method, consistency)
        hist = self._latency_children.get(lkey)
        if hist is None:
            hist = self._latency_children[lkey] = self.latency.labels(*lkey)
        hist.observe(seconds)

    def committed(self, ops: int, seconds: float) -> None:
        self.commit_batch.observe(ops)
        self.commit_latency.observe(seconds)

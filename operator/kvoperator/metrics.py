"""The operator's Prometheus metrics (names listed in docs/metrics.md, "Operator metrics")."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kvnode.core.names import parse_host_port

NS = "kvstore_operator"
STORE = ("namespace", "store")
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class OperatorMetrics:
    """One set per operator instance, in its own registry (so a restarted operator in a test
    process registers afresh)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.reconciles = Counter(
            f"{NS}_reconciles", "Reconcile passes over a KVStore, by result (ok, error).",
            [*STORE, "result"], registry=r,
        )  # fmt: skip
        self.reconcile_duration = Histogram(
            f"{NS}_reconcile_duration_seconds", "Time one reconcile pass over a KVStore took.",
            STORE, buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.step_errors = Counter(
            f"{NS}_reconcile_errors", "Reconcile steps that failed, by step.", [*STORE, "step"], registry=r
        )
        self.step_duration = Histogram(
            f"{NS}_step_duration_seconds", "Time each reconcile step took.", ["step"],
            buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.membership_changes = Counter(
            f"{NS}_membership_changes",
            "Membership changes completed, by action (bootstrap, add, remove, address).",
            [*STORE, "action"], registry=r,
        )  # fmt: skip
        self.membership_change_failures = Counter(
            f"{NS}_membership_change_failures", "Membership changes that failed (to be retried).",
            [*STORE, "action"], registry=r,
        )  # fmt: skip
        self.membership_change_duration = Histogram(
            f"{NS}_membership_change_duration_seconds", "Time a membership change took, by action.",
            ["action"], buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.scale_down_refusals = Counter(
            f"{NS}_scale_down_refusals", "Scale-downs refused as unsafe.", STORE, registry=r
        )
        self.repairs = Counter(
            f"{NS}_pod_repairs",
            "Pod repairs, by kind: the operator's (force_delete_stuck, restart_unhealthy) and a "
            "node's rebuild of a lost volume from its peers (rebuild).",
            [*STORE, "kind"], registry=r,
        )  # fmt: skip
        self.backups = Counter(
            f"{NS}_backups",
            "Backups finished, by result (succeeded, failed).",
            [*STORE, "result"],
            registry=r,
        )
        self.backup_duration = Histogram(
            f"{NS}_backup_duration_seconds", "Time a backup took, snapshots and verification.",
            STORE, buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.backup_bytes = Counter(
            f"{NS}_backup_bytes", "Snapshot bytes of verified backups, by target (volume, bucket).",
            [*STORE, "target"], registry=r,
        )  # fmt: skip
        self.backup_interval = Gauge(
            f"{NS}_backup_interval_seconds", "Seconds between two runs of the backup schedule (unset: none).",
            STORE, registry=r,
        )  # fmt: skip
        self.backups_pruned = Counter(
            f"{NS}_backups_pruned", "Backups deleted by retention.", STORE, registry=r
        )
        self.last_backup = Gauge(
            f"{NS}_last_backup_timestamp_seconds", "Unix time of the newest verified backup.", STORE,
            registry=r,
        )  # fmt: skip
        self.restores = Counter(
            f"{NS}_restores", "Restores from a backup, by result (succeeded, failed).",
            [*STORE, "result"], registry=r,
        )  # fmt: skip
        self.members = Gauge(
            f"{NS}_members", "Members of a store's membership, by state (active, joining, leaving).",
            [*STORE, "state"], registry=r,
        )  # fmt: skip
        self.ready_replicas = Gauge(
            f"{NS}_ready_replicas", "Pods of a store that are Ready.", STORE, registry=r
        )
        self.membership_epoch = Gauge(
            f"{NS}_membership_epoch", "The membership epoch a store's nodes hold.", STORE, registry=r
        )
        self.condition = Gauge(
            f"{NS}_condition", "A store's conditions: 1 when the condition is True.",
            [*STORE, "type"], registry=r,
        )  # fmt: skip
        self._server: Any = None

    def serve(self, listen: str) -> None:
        """Serve /metrics at ``HOST:PORT``."""
        host, port = parse_host_port(listen, what="metrics address")
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def forget_store(self, namespace: str, store: str) -> None:
        """Drop a deleted store's gauges."""
        for gauge in (self.ready_replicas, self.membership_epoch, self.last_backup, self.backup_interval):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, store)
        for gauge, values in ((self.members, ("active", "joining", "leaving")),
                              (self.condition, ("Available", "Progressing", "Degraded"))):  # fmt: skip
            for value in values:
                with contextlib.suppress(KeyError):
                    gauge.remove(namespace, store, value)

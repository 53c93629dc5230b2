"""Admin.Status: one look at every part of a node, for the operator and ``kvctl status``."""

from __future__ import annotations

import time

from kvnode.api.v1 import admin_pb2
from kvnode.backup.service import BackupService
from kvnode.cluster.hints import HintedHandoff
from kvnode.cluster.roster import Roster
from kvnode.cluster.topology import Topology
from kvnode.cluster.transfer import TransferManager
from kvnode.storage.engine import Storage


class NodeStatus:
    """Reads the node's parts at the moment of each call; it keeps nothing of its own."""

    def __init__(
        self,
        node_id: str,
        version: str,
        *,
        storage: Storage,
        topology: Topology,
        roster: Roster,
        hints: HintedHandoff,
        transfers: TransferManager,
        backups: BackupService,
    ) -> None:
        self._node_id = node_id
        self._version = version
        self._storage = storage
        self._topology = topology
        self._roster = roster
        self._hints = hints
        self._transfers = transfers
        self._backups = backups

    def status(self) -> admin_pb2.StatusResponse:
        stats = self._storage.stats()
        placement = self._topology.placement
        totals = self._hints.totals()
        now = time.monotonic()
        peers = [
            admin_pb2.PeerStatus(
                id=link.id,
                address=link.address,
                reachable=link.reachable,
                last_seen_ms_ago=int((now - link.last_seen) * 1000) if link.last_seen else 0,
                hints_pending=totals.get(link.id, (0, 0))[0],
            )
            for link in self._roster.peers
        ]
        return admin_pb2.StatusResponse(
            node_id=self._node_id,
            epoch=placement.membership.epoch,
            partitions_owned=len(placement.owned(self._node_id)),
            keys=stats.keys,
            tombstones=stats.tombstones,
            hints_pending=sum(n for n, _ in totals.values()),
            hint_bytes=sum(b for _, b in totals.values()),
            peers=peers,
            rebuilding=self._roster.local.rebuilding,
            transfer=self._transfers.status.to_proto(),
            map_size_bytes=stats.map_size,
            used_bytes=stats.used_bytes,
            version=self._version,
            last_backup_unix=self._backups.last_backup_unix,
            replication_factor=placement.membership.replication_factor,
            partitions=placement.partitions,
        )

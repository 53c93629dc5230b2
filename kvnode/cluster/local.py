"""This node's own store, as one of the replicas a coordinator talks to."""

from __future__ import annotations

from kvnode.cluster.checks import RecordCheck
from kvnode.cluster.replica import ApplyItem, ApplyResult, KeyVersionEntry, ReadAnswer
from kvnode.core.errors import Unavailable
from kvnode.core.records import Record
from kvnode.storage.engine import Storage
from kvnode.storage.groupcommit import GroupCommitter
from kvnode.storage.ops import ApplyRecords


class LocalReplica:
    """This node's own store. While it rebuilds, it takes writes but refuses reads."""

    healthy = True

    def __init__(self, node_id: str, storage: Storage, committer: GroupCommitter, check: RecordCheck) -> None:
        self.id = node_id
        self._storage = storage
        self._committer = committer
        self._check = check
        self.rebuilding = False

    def _check_readable(self) -> None:
        if self.rebuilding:
            raise Unavailable(f"node {self.id} is rebuilding its data from peers")

    async def apply(self, items: list[ApplyItem], *, repair: bool = False) -> list[ApplyResult]:
        """Store what may be stored; each refused record gets its reason as its result."""
        refusals = [self._check.refusal(record) for record, _ in items]
        if not any(refusals):
            return await self._committer.submit(ApplyRecords.of(items))
        stored = [item for item, why in zip(items, refusals, strict=True) if why is None]
        results = iter(await self._committer.submit(ApplyRecords.of(stored)) if stored else [])
        return [next(results) if why is None else why for why in refusals]

    async def read(self, keys: list[bytes], max_bytes: int | None = None) -> list[ReadAnswer]:
        self._check_readable()
        return self._storage.get_many(keys, max_bytes)

    def read_now(self, keys: list[bytes], max_bytes: int | None = None) -> list[ReadAnswer]:
        """The coordinator's fast path: a local read needs no task."""
        return self._storage.get_many(keys, max_bytes)

    async def scan(
        self, start: bytes, end: bytes, prefix: bytes, limit: int, keys_only: bool
    ) -> tuple[list[Record], bool]:
        self._check_readable()
        return self._storage.scan(start, end, prefix, limit, keys_only)

    async def digests(self, partitions: list[int]) -> list[tuple[int, bytes, int]]:
        return self._storage.digests(partitions)

    async def key_versions(
        self, partition: int, after: bytes, limit: int
    ) -> tuple[list[KeyVersionEntry], bool]:
        return self._storage.key_versions(partition, after, limit)

    async def fetch_partition(self, partition: int, after: bytes, limit: int) -> tuple[list[Record], bool]:
        return self._storage.fetch_partition(partition, after, limit)

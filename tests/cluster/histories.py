"""Replicas' copies of keys as replication leaves them, for tests of what merges several replicas.

Each key gets a short history of writes (puts and deletes, each with a newer version), and each
replica holds the newest write of the history that reached it, or nothing: replicas miss writes,
and two replicas holding the same write hold the same version. The newest copy of a key among all
replicas (:func:`newest_copies`) is what a reader of every replica would keep.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from kvnode.core.records import Record, Version

WRITERS = ("w1", "w2")


def replica_copies(
    keys: Iterable[bytes],
    replicas: Iterable[str],
    *,
    first_hlc: int,
    seed: int = 0,
    tombstones: float = 0.3,
) -> dict[str, list[Record]]:
    """For each replica, its copy of each key it holds, in key order."""
    rng = random.Random(seed)
    replicas = list(replicas)
    copies: dict[str, list[Record]] = {r: [] for r in replicas}
    for key in sorted(keys):
        history = _history(key, rng, first_hlc, tombstones)
        for replica in replicas:
            reached = rng.randint(0, len(history))  # how much of the history reached this replica
            if reached:
                copies[replica].append(history[reached - 1])
    return copies


def _history(key: bytes, rng: random.Random, first_hlc: int, tombstones: float) -> list[Record]:
    hlc = first_hlc
    writes = []
    for _ in range(rng.randint(1, 3)):
        hlc += rng.randint(1, 4)
        deleted = rng.random() < tombstones
        value = b"" if deleted else b"%s@%d" % (key, hlc)
        writes.append(Record(key, value, Version(hlc, rng.choice(WRITERS)), deleted))
    return writes


def newest_copies(copies: dict[str, list[Record]]) -> dict[bytes, Record]:
    """The newest copy of every key among all replicas (the first of equal versions)."""
    newest: dict[bytes, Record] = {}
    for records in copies.values():
        for rec in records:
            seen = newest.get(rec.key)
            if seen is None or rec.version > seen.version:
                newest[rec.key] = rec
    return newest

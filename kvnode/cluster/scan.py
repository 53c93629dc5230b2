"""Range scans across a partitioned cluster.

Keys are spread over partitions by hash, so a scan asks every member for its next ``limit`` records
from the start key and merges them. A member that stopped at its limit has only *covered* the range
up to its last key, so the page ends at the smallest such key; the continuation token resumes just
after it. Each record counts only from a replica of its partition (a former owner may still hold
old data), and every partition must have as many replicas answering as the level needs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from kvnode.cluster.roster import Roster
from kvnode.cluster.topology import Topology
from kvnode.core.errors import InvalidArgument, Unavailable
from kvnode.core.levels import Level, single_key_only
from kvnode.core.records import MESSAGE_BUDGET, Record

_TOKEN_V1 = b"\x01"


def encode_token(last_key: bytes) -> bytes:
    return _TOKEN_V1 + last_key


def decode_token(token: bytes) -> bytes:
    if not token.startswith(_TOKEN_V1):
        raise InvalidArgument(
            "malformed continuation_token: pass back the token from the previous ScanResponse unchanged"
        )
    return token[len(_TOKEN_V1) :]


@dataclass(frozen=True)
class ScanPage:
    records: list[Record]
    token: bytes


class Scanner:
    """Serves one scan page from every member's next records in the range (see the module)."""

    def __init__(self, topology: Topology, roster: Roster, *, timeout: float) -> None:
        self._topology = topology
        self._roster = roster
        self._timeout = timeout

    async def scan(
        self,
        *,
        start: bytes,
        end: bytes,
        prefix: bytes,
        limit: int,
        keys_only: bool,
        token: bytes,
        level: Level,
    ) -> ScanPage:
        single_key_only(level, "scan")
        if token:
            start = max(start, decode_token(token) + b"\x00")
        with self._topology.request() as placement:
            members = placement.membership.old_view
            results = await asyncio.gather(
                *(
                    asyncio.wait_for(
                        self._roster.get(m).scan(start, end, prefix, limit, keys_only), self._timeout
                    )
                    for m in members
                ),
                return_exceptions=True,
            )
        answered = {
            m: result
            for m, result in zip(members, results, strict=True)
            if not isinstance(result, BaseException)
        }
        for p in range(placement.partitions):
            replicas = placement.read_replicas(p)
            have = sum(r in answered for r in replicas)
            need = level.needed(len(replicas))
            if have < need:
                raise Unavailable(
                    f"{level.name} scan: {have} of {len(replicas)} replicas of partition {p} answered, "
                    f"{need} needed"
                )
        bounds = [records[-1].key for records, exhausted in answered.values() if not exhausted]
        bound = min(bounds) if bounds else None
        merged: dict[bytes, Record] = {}
        for member, (records, _) in answered.items():
            for rec in records:
                if bound is not None and rec.key > bound:
                    break
                if member not in placement.read_replicas(placement.partition(rec.key)):
                    continue
                seen = merged.get(rec.key)
                if seen is None or rec.version > seen.version:
                    merged[rec.key] = rec
        live = [merged[k] for k in sorted(merged) if not merged[k].tombstone]
        size = 0
        for n, rec in enumerate(live):  # end the page early rather than send an oversized message
            size += len(rec.key) + len(rec.value)
            if n and (n >= limit or size > MESSAGE_BUDGET):
                return ScanPage(live[:n], encode_token(live[n - 1].key))
        return ScanPage(live, b"" if bound is None else encode_token(bound))

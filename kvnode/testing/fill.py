"""Filling a store with a given amount of data fast: batch writes from a few threads, for tests and
benchmarks that need a store of hundreds of MB (backups, memory bounds)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from kvnode.client import Credentials, KVClient

MB = 1_000_000


def fill(
    endpoints: Sequence[str],
    megabytes: int,
    *,
    value_size: int = 1024,
    batch: int = 1000,
    credentials: Credentials | None = None,
) -> int:
    """Write about ``megabytes`` MB of ``value_size``-byte values (random hex, so they compress
    about 2:1, like real data more than zeros would); returns the bytes of values written."""
    batches = max(1, megabytes * MB // (value_size * batch))

    def one(index: int) -> None:
        with KVClient(endpoints, credentials=credentials) as client:
            half = value_size // 2
            puts = {b"k%06d-%04d" % (index, i): secrets.token_hex(half).encode() for i in range(batch)}
            client.batch_write(puts=puts)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(batches)))
    return batches * batch * value_size

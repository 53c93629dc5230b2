"""Request limits. Each refusal names the limit and the flag that sets it."""

from __future__ import annotations

from collections.abc import Sequence

from kvnode.config import Limits
from kvnode.core.errors import InvalidArgument
from kvnode.storage.schema import MAX_KEY_BYTES


def check_key(key: bytes, limits: Limits, what: str = "key") -> None:
    if not key:
        raise InvalidArgument(f"{what} must not be empty")
    if len(key) > limits.max_key_bytes:
        raise InvalidArgument(
            f"{what} is {len(key)} bytes, over the limit of {limits.max_key_bytes} bytes (--max-key-bytes)"
        )


def check_value(value: bytes, limits: Limits, what: str = "value") -> None:
    if len(value) > limits.max_value_bytes:
        raise InvalidArgument(
            f"{what} is {len(value)} bytes, over the limit of {limits.max_value_bytes} bytes "
            "(--max-value-bytes)"
        )


def check_batch(items: int, size: int, limits: Limits) -> None:
    if items == 0:
        raise InvalidArgument("batch is empty")
    if items > limits.max_batch_items:
        raise InvalidArgument(
            f"batch has {items} items, over the limit of {limits.max_batch_items} items (--max-batch-items)"
        )
    if size > limits.max_batch_bytes:
        raise InvalidArgument(
            f"batch is {size} bytes, over the limit of {limits.max_batch_bytes} bytes (--max-batch-bytes)"
        )


def check_keys(keys: Sequence[bytes], limits: Limits, what: str = "key #{n}") -> None:
    """Every key of a batch; the first one over a limit is named. Checked in one pass of C loops
    first, because batches are where the per-item cost adds up."""
    if all(keys) and max(map(len, keys), default=0) <= limits.max_key_bytes:
        return
    for n, key in enumerate(keys):
        check_key(key, limits, what.format(n=n))


def check_values(values: Sequence[bytes], limits: Limits, what: str = "value #{n}") -> None:
    """Every value of a batch; the first one over the limit is named."""
    if max(map(len, values), default=0) <= limits.max_value_bytes:
        return
    for n, value in enumerate(values):
        check_value(value, limits, what.format(n=n))


# -- what peers and admin tools send -------------------------------------------------------------

PAGE_LIMIT = 10_000  # the most records or entries one partition page may ask for
READ_BATCH = 64  # keys a peer link merges into one read, whatever --max-batch-items is


def check_peer_keys(keys: Sequence[bytes], limits: Limits) -> None:
    """A peer's read: keys the store can hold, and no more of them than a batch or a link sends."""
    most = max(limits.max_batch_items, READ_BATCH)
    if not keys or len(keys) > most:
        raise InvalidArgument(f"a replica read names {len(keys)} keys; 1 to {most} are allowed")
    if not all(keys) or max(map(len, keys)) > MAX_KEY_BYTES:
        raise InvalidArgument(f"a replica read names a key that is empty or over {MAX_KEY_BYTES} bytes")


def check_bound(name: str, value: bytes) -> None:
    """A scan or page bound: a key, or just past one (a continuation)."""
    if len(value) > MAX_KEY_BYTES + 1:
        raise InvalidArgument(f"{name} is {len(value)} bytes; no stored key is longer than {MAX_KEY_BYTES}")


def check_partitions(partitions: Sequence[int], count: int) -> None:
    if len(partitions) > count or any(p >= count for p in partitions):
        raise InvalidArgument(f"partitions are numbered 0 to {count - 1}, {count} of them at most")


def check_page(limit: int) -> int:
    """A page size asked for: 0 means the default."""
    if limit > PAGE_LIMIT:
        raise InvalidArgument(f"a page of {limit} is over the limit of {PAGE_LIMIT}")
    return limit or 1000

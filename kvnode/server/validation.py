"""Request limits. Each refusal names the limit and the flag that sets it."""

from __future__ import annotations

from collections.abc import Iterable

from kvnode.config import Limits
from kvnode.errors import InvalidArgument


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


def check_keys(keys: Iterable[bytes], limits: Limits) -> None:
    for n, key in enumerate(keys):
        check_key(key, limits, f"key #{n}")

"""When a failed call is tried again, and how long to wait before it.

Two outcomes say "another try may succeed": UNAVAILABLE (the node or too many replicas are down)
and DEADLINE_EXCEEDED (the attempt stalled); and a node that was too busy to take the call says so
(see :func:`overloaded`). Everything else (a malformed request, a full
disk, a stale epoch, a missing backup) fails the same way however often it is sent.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

_CONNECT_FAILURES = (
    "failed to connect to all addresses",
    "errors resolving",
    "dns resolution failed",
    "name resolution",
)


def never_sent(code: grpc.StatusCode, details: str) -> bool:
    """True when gRPC could not reach the address at all, so the request cannot have been applied
    and is safe to send elsewhere even when writes are not retried."""
    lowered = details.lower()
    return code == grpc.StatusCode.UNAVAILABLE and any(s in lowered for s in _CONNECT_FAILURES)


def overloaded(exc: grpc.aio.AioRpcError) -> bool:
    """True when the node refused the call before doing anything because it had too many requests
    in progress (RESOURCE_EXHAUSTED with ``kvnode-overloaded``): safe to send again after a pause.
    A full disk is RESOURCE_EXHAUSTED too, without that mark, and is not retried."""
    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    # grpc.aio gives (key, value) pairs; the stubs describe the sync API's objects.
    pairs: Iterable[tuple[str, object]] = exc.trailing_metadata() or ()  # type: ignore[assignment]
    return any(key == "kvnode-overloaded" for key, _ in pairs)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter.

    ``attempts`` counts every RPC of one call, the first included; the call's timeout bounds them
    all together. ``retry_writes=False`` sends puts, deletes and batch writes once (they still move
    on to another endpoint when the first could not be connected to, since nothing was sent).
    """

    attempts: int = 5
    backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0
    retry_writes: bool = True
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoff and max_backoff must be >= 0 and multiplier >= 1")

    def delay(self, retry: int) -> float:
        """Seconds to wait before the ``retry``-th wait of a call (0-based): uniform in
        [0, min(max_backoff, backoff * multiplier**retry)], so that clients that failed together
        do not come back together."""
        ceiling = min(self.max_backoff, self.backoff * self.multiplier**retry)
        return self.rng.uniform(0, ceiling)

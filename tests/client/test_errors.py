"""Typed errors, timeouts and retries: what a failed call raises, and how often it was tried."""

from __future__ import annotations

import random
import time

import grpc
import pytest

from kvnode.client import (
    AsyncKVClient,
    Attempt,
    DeadlineExceeded,
    InvalidArgument,
    KVClient,
    RetryPolicy,
    Unavailable,
)
from kvnode.client.retry import never_sent
from kvnode.testing.processes import ProcessCluster, free_port
from tests.conftest import ClusterFactory


class Recorder:
    """Stands in for asyncio.sleep and the on_attempt hook: remembers instead of waiting."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.attempts: list[Attempt] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def attempt(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (b"", b"v", "key must not be empty"),
        (b"k" * 501, b"v", "over the limit of 500 bytes"),
        (b"k", b"v" * (1024 * 1024 + 1), "over the limit of 1048576 bytes"),
    ],
    ids=["empty-key", "key-over-500-bytes", "value-over-1MiB"],
)
async def test_invalid_argument_is_typed_and_not_retried(
    shared_cluster1: ProcessCluster, key: bytes, value: bytes, message: str
) -> None:
    seen = Recorder()
    async with AsyncKVClient(shared_cluster1.endpoints, on_attempt=seen.attempt, route=False) as kv:
        with pytest.raises(InvalidArgument, match=message):
            await kv.put(key, value)
    assert len(seen.attempts) == 1


async def test_unreachable_endpoint_is_retried_with_backoff_then_unavailable() -> None:
    seen = Recorder()
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    policy = RetryPolicy(attempts=6, backoff=0.1, max_backoff=0.3, rng=random.Random(7))
    async with AsyncKVClient(
        dead, retry_policy=policy, sleep=seen.sleep, on_attempt=seen.attempt, route=False
    ) as kv:
        with pytest.raises(Unavailable, match=r"cannot reach 127\.0\.0\.1"):
            await kv.get("k")
    assert [a.number for a in seen.attempts] == [1, 2, 3, 4, 5, 6]
    assert all(a.unreachable for a in seen.attempts)
    assert {a.address for a in seen.attempts} == set(dead)
    # Moving on to an endpoint not yet tried is immediate; coming back to one waits. Waits are
    # jittered below a ceiling that doubles up to max_backoff.
    assert len(seen.sleeps) == 6 - len(dead)
    ceilings = [min(0.3, 0.1 * 2**n) for n in range(len(seen.sleeps))]
    assert all(0 <= s <= c for s, c in zip(seen.sleeps, ceilings, strict=True))


async def test_retries_stop_when_the_next_wait_would_pass_the_deadline() -> None:
    seen = Recorder()
    policy = RetryPolicy(attempts=10, backoff=10.0, max_backoff=10.0, rng=random.Random(1))
    assert random.Random(1).uniform(0, 10.0) > 0.5  # the first wait is longer than the budget
    async with AsyncKVClient(
        f"127.0.0.1:{free_port()}",
        timeout=0.5,
        retry_policy=policy,
        sleep=seen.sleep,
        on_attempt=seen.attempt,
        route=False,
    ) as kv:
        with pytest.raises(Unavailable):
            await kv.get("k")
    assert len(seen.attempts) == 1 and seen.sleeps == []


def test_retry_policy_delays_are_full_jitter() -> None:
    policy = RetryPolicy(backoff=0.05, max_backoff=1.0, rng=random.Random(3))
    for retry in range(8):
        ceiling = min(1.0, 0.05 * 2**retry)
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert min(delays) < ceiling / 4 and max(delays) > ceiling * 3 / 4
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_connect_failures_are_told_apart_from_node_errors() -> None:
    refused = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused"
    assert never_sent(grpc.StatusCode.UNAVAILABLE, refused)
    assert never_sent(grpc.StatusCode.UNAVAILABLE, "errors resolving kv-0.kv.svc:7000: Domain name not found")
    assert not never_sent(grpc.StatusCode.UNAVAILABLE, "QUORUM write: 1 of 3 replicas acknowledged, 2 needed")
    assert not never_sent(grpc.StatusCode.INVALID_ARGUMENT, refused)


def test_timeout_against_a_frozen_node_raises_deadline_exceeded(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(size=1)
    with KVClient(cluster.endpoints, timeout=0.5, route=False) as kv:
        kv.put("k", "v")
        cluster.pause(0)
        try:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded, match=r"within 0\.5s"):
                kv.get("k")
            with pytest.raises(DeadlineExceeded):
                kv.put("k", "w", timeout=0.3)
            assert time.monotonic() - started < 5
        finally:
            cluster.resume(0)
        entry = kv.get("k", timeout=5)
        assert entry is not None

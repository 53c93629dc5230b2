"""The Prometheus metrics a node serves, scraped over real HTTP."""

from __future__ import annotations

import contextlib
import random
import urllib.request
from collections.abc import Awaitable, Callable

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc
from kvnode.metrics import LATENCY_BUCKETS, NodeMetrics
from kvnode.node import Node
from kvnode.testing.processes import free_port

NodeFactory = Callable[..., Awaitable[Node]]


def scrape(address: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for found, v in samples.get(name, []) if all(found.get(k) == x for k, x in labels.items()))


async def test_metrics_cover_requests_latency_storage_and_commits(make_node: NodeFactory) -> None:
    metrics_address = f"127.0.0.1:{free_port()}"
    node = await make_node("m1", metrics_listen=metrics_address)
    async with grpc.aio.insecure_channel(node.config.listen) as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        for i in range(10):
            await kv.Put(kv_pb2.PutRequest(key=b"k%d" % i, value=b"v"))
        await kv.Get(kv_pb2.GetRequest(key=b"k1"))
        with contextlib.suppress(grpc.aio.AioRpcError):
            await kv.Put(kv_pb2.PutRequest(key=b"", value=b"v"))
    samples = scrape(metrics_address)
    assert value(samples, "kvnode_requests_total", method="Put", code="OK", consistency="QUORUM") == 10
    assert value(samples, "kvnode_requests_total", method="Put", code="INVALID_ARGUMENT") == 1
    assert value(samples, "kvnode_requests_total", method="Get", code="OK") == 1
    assert value(samples, "kvnode_request_duration_seconds_count", method="Put") == 11
    assert value(samples, "kvnode_lmdb_entries") == 10
    assert value(samples, "kvnode_keys") == 10
    assert value(samples, "kvnode_lmdb_map_size_bytes") >= 1 << 20
    assert value(samples, "kvnode_lmdb_used_bytes") > 0
    assert 0 < value(samples, "kvnode_data_disk_free_bytes") <= value(samples, "kvnode_data_disk_size_bytes")
    assert value(samples, "kvnode_group_commit_batch_size_sum") >= 10
    assert value(samples, "kvnode_group_commit_duration_seconds_count") >= 1
    assert value(samples, "process_cpu_seconds_total") > 0
    assert value(samples, "kvnode_info", node_id="m1") == 1
    assert not any(name.endswith("_created") for name in samples)


def test_request_metrics_read_exactly_as_prometheus_clients_own_counter_and_histogram() -> None:
    """The request metrics are plain counters turned into families at scrape time; the page must be
    what prometheus-client's Counter and Histogram would show for the same requests, line for line
    (dashboards, alerts and recording rules read these names, labels and buckets)."""
    reference = CollectorRegistry()
    counter = Counter(
        "kvnode_requests",
        "Client requests by RPC, consistency level and status code.",
        ["method", "consistency", "code"],
        registry=reference,
    )
    histogram = Histogram(
        "kvnode_request_duration_seconds",
        "Client request latency by RPC and consistency level.",
        ["method", "consistency"],
        buckets=LATENCY_BUCKETS,
        registry=reference,
    )
    metrics = NodeMetrics("kv-0", "test")
    rng = random.Random(14)
    # Bucket bounds exactly, just past them, and past the last one.
    seconds = [*LATENCY_BUCKETS, *(b * 1.0001 for b in LATENCY_BUCKETS), 0.0, 60.0]
    for _ in range(3000):
        method, level = rng.choice(["Put", "Get", "BatchWrite"]), rng.choice(["", "ONE", "QUORUM"])
        code, took = rng.choice(["OK", "OK", "INVALID_ARGUMENT"]), rng.choice([*seconds, rng.random()])
        counter.labels(method, level, code).inc()
        histogram.labels(method, level).observe(took)
        metrics.observe_request(method, level, code, took)

    def page(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        ours = ("kvnode_requests_total", "kvnode_request_duration_seconds", "# HELP kvnode_request",
                "# TYPE kvnode_request")  # fmt: skip
        return sorted(line for line in text.splitlines() if line.startswith(ours))

    ours, theirs = page(metrics.registry), page(reference)
    assert len(theirs) > 100
    assert ours == theirs

"""Starting what the benchmarks measure, and filling it with the keys that reads look up."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc
from kvnode.testing.processes import ProcessCluster
from kvnode.testing.tls import TestPKI

PREFIX = b"bench/"


def key(n: int, prefix: bytes = PREFIX) -> bytes:
    """The key the load generator uses for number ``n`` (see ``loadgen._keys``)."""
    return prefix + b"%08d" % n


def kvnode_cluster(
    root: Path,
    size: int,
    *,
    partitions: int = 1024,
    extra_args: Sequence[str] = (),
    source: Path | None = None,
    pki: TestPKI | None = None,
) -> ProcessCluster:
    """``size`` kvnode processes (RF = size, capped at 3), started and serving; ``source`` runs the
    kvnode of another checkout; ``pki``: mutual TLS on client and peer ports."""
    cluster = ProcessCluster(
        root,
        size=size,
        replication_factor=min(size, 3),
        partitions=partitions,
        extra_args=extra_args,
        source=source,
        pki=pki,
        peer_ports=pki is not None,
    )
    try:
        cluster.start()
    except BaseException:
        cluster.close()
        raise
    return cluster


def pids(cluster: ProcessCluster) -> tuple[int, ...]:
    return tuple(n.pid for n in cluster.nodes if n.running)


def preload_kv(
    endpoint: str, keys: int, value_size: int, batch: int = 100, tls: tuple[bytes, bytes, bytes] | None = None
) -> None:
    """Write every key of the key space once (QUORUM batches), so reads find them. ``tls``: PEM
    CA, certificate and key, for a node that serves mutual TLS."""
    value = os.urandom(value_size)
    if tls is None:
        opened = grpc.insecure_channel(endpoint)
    else:
        opened = grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(tls[0], tls[2], tls[1]))
    with opened as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        for start in range(0, keys, batch):
            mutations = [
                kv_pb2.Mutation(key=key(n), value=value) for n in range(start, min(start + batch, keys))
            ]
            stub.BatchWrite(kv_pb2.BatchWriteRequest(mutations=mutations), timeout=30)


def preload_etcd(endpoint: str, keys: int, value_size: int) -> None:
    """Put every key of the key space once (etcd has no batch put outside a Txn; 16 threads)."""
    from bench.etcd import stubs

    pb2, pb2_grpc = stubs()
    value = os.urandom(value_size)
    with grpc.insecure_channel(endpoint) as channel:
        stub = pb2_grpc.KVStub(channel)
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(lambda n: stub.Put(pb2.PutRequest(key=key(n), value=value), timeout=30), range(keys))
            )

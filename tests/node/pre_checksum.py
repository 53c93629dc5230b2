"""A data directory written by kvnode before record checksums (commit 5cdd1bb, the code on main just
before them), kept as ``fixtures/pre-checksum-kv-0.tar.gz``, and how it was made.

It is kv-0's ``--data-dir`` of a two-node cluster (RF=2, 16 partitions) that the old kvnode ran:
live keys, overwritten keys, deletes (tombstones), a value that spans LMDB overflow pages, and hints
that kv-0 kept for kv-1 while kv-1 was down. Made with::

    mkdir /tmp/kv-old && git archive 5cdd1bb | tar -x -C /tmp/kv-old
    python -m tests.node.pre_checksum --source /tmp/kv-old

which runs that checkout's ``kvnode`` (``ProcessCluster(source=...)``) and writes the archive.
:func:`expected` is what the store holds, for the tests to compare with.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tarfile
import tempfile
from pathlib import Path

import grpc

from kvnode.api.v1 import kv_pb2, kv_pb2_grpc, types_pb2
from kvnode.testing.processes import ProcessCluster

COMMIT = "5cdd1bb"
ARCHIVE = Path(__file__).parent / "fixtures" / "pre-checksum-kv-0.tar.gz"
NODE_ID = "kv-0"
PEER_ID = "kv-1"
PARTITIONS = 16
REPLICATION_FACTOR = 2
BIG = b"0123456789abcdef" * 1500  # 24000 bytes: LMDB keeps it in overflow pages


def expected() -> dict[bytes, bytes | None]:
    """Every key kv-0 holds and its value (None for a delete)."""
    held: dict[bytes, bytes | None] = {f"k{n:03}".encode(): f"value-k{n:03}".encode() for n in range(150)}
    for n in range(10):
        held[f"k{n:03}".encode()] = None
    for n in range(10, 20):
        held[f"k{n:03}".encode()] = f"second-k{n:03}".encode()
    held[b"big"] = BIG
    held.update({f"h{n:03}".encode(): f"hinted-h{n:03}".encode() for n in range(20)})
    return held


HINTED = [f"h{n:03}".encode() for n in range(20)]
"""Keys written while kv-1 was down: kv-0 holds a hint for kv-1 of each."""


async def _write(address: str, consistency: types_pb2.Consistency.ValueType) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        kv = kv_pb2_grpc.KVStub(channel)

        async def put(key: bytes, value: bytes) -> None:
            await kv.Put(kv_pb2.PutRequest(key=key, value=value, consistency=consistency), timeout=10)

        if consistency == types_pb2.CONSISTENCY_QUORUM:
            for n in range(150):
                await put(f"k{n:03}".encode(), f"value-k{n:03}".encode())
            for n in range(10):
                await kv.Delete(kv_pb2.DeleteRequest(key=f"k{n:03}".encode(), consistency=consistency))
            for n in range(10, 20):
                await put(f"k{n:03}".encode(), f"second-k{n:03}".encode())
            await put(b"big", BIG)
        else:
            for key in HINTED:
                await put(key, b"hinted-" + key)


def make(source: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = ProcessCluster(
            Path(tmp),
            ids=[NODE_ID, PEER_ID],
            replication_factor=REPLICATION_FACTOR,
            partitions=PARTITIONS,
            source=source,
        )
        with cluster:
            cluster.start()
            asyncio.run(_write(cluster[NODE_ID].address, types_pb2.CONSISTENCY_QUORUM))
            cluster.terminate(PEER_ID)
            asyncio.run(_write(cluster[NODE_ID].address, types_pb2.CONSISTENCY_ONE))
            cluster.terminate(NODE_ID)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(cluster[NODE_ID].data_dir / "lmdb" / "data.mdb", arcname="lmdb/data.mdb")
        ARCHIVE.parent.mkdir(exist_ok=True)
        ARCHIVE.write_bytes(buffer.getvalue())


def unpack(data_dir: Path) -> Path:
    """The fixture as kv-0's ``--data-dir`` at ``data_dir``."""
    data_dir.mkdir(parents=True)
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(data_dir, filter="data")
    return data_dir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, required=True, help=f"a checkout of commit {COMMIT}")
    make(parser.parse_args().source.resolve())

"""A store of a few hundred MB goes to a bucket and comes back with the node's memory bounded: the
snapshot is streamed both ways, never held whole (docs/operations.md gives the bound: 64 MiB above
the node's usual memory). Real node processes, moto's S3 server on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvnode.client import KVClient
from kvnode.testing.fill import MB, fill
from kvnode.testing.memory import PeakMemory
from kvnode.testing.processes import ProcessCluster
from kvnode.testing.s3server import S3Server

STORE_MB = 250
BOUND = 64 * 1024 * 1024  # docs/operations.md, "Memory bound"

pytestmark = pytest.mark.timeout(600)


def test_a_store_of_hundreds_of_mb_backs_up_and_restores_in_bounded_memory(
    tmp_path: Path, s3: S3Server, hmac_key_file: Path
) -> None:
    url = s3.bucket("big")
    node_args = ["--backup-hmac-key-file", str(hmac_key_file), "--max-map-size", "0"]
    with ProcessCluster(tmp_path / "source", size=1, extra_args=node_args, env=s3.env) as source:
        source.start()
        written = fill(source.endpoints, STORE_MB)
        with PeakMemory([source[0].pid]) as memory:
            memory.reset()
            before = memory.now()
            manifest = source.admin.backup(source[0].address, url, "big-1", timeout=600)
            backup_growth = memory.read().anon - before
    assert manifest.size_bytes > 100 * MB  # compressed about 2:1: the data really went up
    grown = f"a backup of {written / MB:.0f} MB grew the node by {backup_growth / MB:.0f} MB"
    assert backup_growth < BOUND, grown

    with ProcessCluster(tmp_path / "target", size=1, extra_args=node_args, env=s3.env) as target:
        target.start()
        with PeakMemory([target[0].pid]) as memory:
            memory.reset()
            before = memory.now()
            restored = target.admin.restore(url, "big-1", timeout=600)
            restore_growth = memory.read().anon - before
        assert restored.keys == manifest.keys == written // 1024
        with KVClient(target.endpoints) as kv:
            first = kv.get(b"k000000-0000")
            assert first is not None and len(first.value) == 1024
    assert restore_growth < BOUND, f"restore grew the node by {restore_growth / MB:.0f} MB"

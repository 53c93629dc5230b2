"""Backups never carry a corrupt record, and a damaged snapshot file is refused, not mapped."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvnode.backup import snapshots
from kvnode.storage.engine import Storage
from kvnode.storage.lmdbfile import DamagedFile
from kvnode.storage.schema import Corrupt
from kvnode.testing.damage import flip_byte, truncate
from tests.storage.test_corruption import BAD, GOOD, PARTITIONS, put


def snapshot_of(tmp_path: Path, *, rot: bool) -> tuple[snapshots.Manifest, list[tuple[bytes, str]]]:
    storage = Storage(tmp_path / "db", partitions=PARTITIONS, map_size=1 << 22)
    found: list[tuple[bytes, str]] = []
    storage.report_corruption(lambda corrupt, where: found.append((corrupt.key, where)))
    try:
        put(storage, BAD, *GOOD)
        if rot:
            flip_byte(storage.path / "data.mdb", BAD.value, offset=3)
        manifest = snapshots.take_snapshot(
            storage, str(tmp_path / "backups"), "b1", node_id="n1", epoch=1, replication_factor=3
        )
        reported = list(found)
        assert isinstance(storage.get(BAD.key), Corrupt) == rot  # the store itself is untouched
    finally:
        storage.close()
    return manifest, reported


def test_a_snapshot_leaves_out_the_records_that_fail_their_check(tmp_path: Path) -> None:
    manifest, found = snapshot_of(tmp_path, rot=True)

    assert found == [(BAD.key, "backup")]  # reported: the node repairs its own copy
    assert (manifest.keys, manifest.tombstones) == (len(GOOD), 0)
    manifests, problems = snapshots.verify(str(tmp_path / "backups"), "b1")
    assert problems == [] and manifests == [manifest]
    assert list(snapshots.snapshot_records(Path(manifest.path))) == sorted(GOOD)
    assert sorted(p.name for p in Path(manifest.path).iterdir()) == ["data.mdb", "manifest.json"]


def test_a_truncated_snapshot_is_refused_before_it_is_mapped(tmp_path: Path) -> None:
    manifest, found = snapshot_of(tmp_path, rot=False)
    assert found == [] and manifest.keys == len(GOOD) + 1
    truncate(Path(manifest.path) / snapshots.SNAPSHOT, 0.3)

    with pytest.raises(DamagedFile, match="is truncated"):
        list(snapshots.snapshot_records(Path(manifest.path)))
    _, problems = snapshots.verify(str(tmp_path / "backups"), "b1")
    assert problems and "checksum mismatch" in problems[0]

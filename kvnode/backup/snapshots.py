"""Snapshots on disk: consistent LMDB copies with manifests, and their verification.

Layout: ``<directory>/<backup_id>/<node_id>/{data.mdb,manifest.json}``. Every node of a cluster
writes its own snapshot under the same backup id. A snapshot is ``env.copy(compact=True)``, which
LMDB takes inside one read transaction, so it is consistent without pausing writes.

Restoring (:mod:`kvnode.backup.service`) replays every snapshot's records through the cluster's
ordinary write path with their original versions, reading all of a backup's snapshots as one
key-ordered stream (:func:`merged_records`).

No snapshot carries a record that fails its checksum: the copy is checked record by record before
its manifest is written, and records that fail are taken out of it (and reported to the node, whose
scrub repairs its own copy from the other replicas). Verification checks every record again, so a
restore never spreads a damaged one.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import shutil
import tempfile
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from operator import attrgetter
from pathlib import Path

import lmdb

from kvnode.core.errors import FailedPrecondition, InvalidArgument, NotFound
from kvnode.core.names import check_backup_id
from kvnode.core.records import Record
from kvnode.storage.engine import Storage
from kvnode.storage.lmdbfile import check_data_file
from kvnode.storage.schema import DATA, ChecksumError, decode_value, decode_version

SNAPSHOT = "data.mdb"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    backup_id: str
    node_id: str
    epoch: int
    keys: int
    tombstones: int
    sha256: str
    size_bytes: int
    created_unix: int
    path: str
    partitions: int
    replication_factor: int

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        try:
            data = json.loads((folder / MANIFEST).read_text())
            return cls(**{**data, "path": str(folder)})
        except (OSError, ValueError, TypeError) as exc:
            raise InvalidArgument(f"unreadable backup manifest in {folder}: {exc}") from exc


def _directory(directory: str) -> Path:
    if not directory:
        raise InvalidArgument("a backup directory is required")
    return Path(directory)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open_snapshot(folder: Path) -> lmdb.Environment:
    check_data_file(folder)  # before LMDB maps it: a truncated snapshot would be a SIGBUS
    return lmdb.open(str(folder), readonly=True, lock=False, max_dbs=8, subdir=True)


def _census(folder: Path) -> tuple[int, int, dict[bytes, str]]:
    """(intact records, tombstones among them, the keys that fail their check and why) of a
    snapshot, by checking every record."""
    records = tombstones = 0
    corrupt: dict[bytes, str] = {}
    env = _open_snapshot(folder)
    try:
        data = env.open_db(DATA, create=False)
        with env.begin(buffers=False) as txn:
            for key, raw in txn.cursor(db=data).iternext():
                try:
                    _, tomb = decode_version(key, raw)
                except ChecksumError as exc:
                    corrupt[key] = exc.reason
                    continue
                records += 1
                tombstones += tomb
    finally:
        env.close()
    return records, tombstones, corrupt


def _leave_out(storage: Storage, folder: Path, corrupt: dict[bytes, str]) -> None:
    """Take the records that failed their check out of a fresh snapshot, and tell the node."""
    for key, reason in corrupt.items():
        storage.found_corrupt(key, reason, "backup")
    copy = Storage(folder, partitions=storage.partitions, map_size=storage.map_size())
    try:
        copy.write(lambda txn: [txn.remove(key) for key in corrupt])
    finally:
        copy.close()
        (folder / "lock.mdb").unlink(missing_ok=True)  # a snapshot is its data file and manifest


def snapshot_records(folder: Path) -> Generator[Record, None, None]:
    """Every record of a snapshot, in key order (LMDB keeps the data sub-database sorted)."""
    env = _open_snapshot(folder)
    try:
        data = env.open_db(DATA, create=False)
        with env.begin(buffers=False) as txn:
            for key, raw in txn.cursor(db=data).iternext():
                yield decode_value(key, raw)
    finally:
        env.close()


@contextlib.contextmanager
def merged_records(folders: list[Path]) -> Iterator[Iterator[Record]]:
    """Every record of every snapshot in ``folders``, as one stream in key order.

    Each snapshot's records come in key order, so the merge holds one record per snapshot. The
    records of one key come in the order of ``folders`` (``heapq.merge`` is stable). Every snapshot
    is closed on the way out, also when the stream was not read to its end.
    """
    with contextlib.ExitStack() as stack:
        streams = [stack.enter_context(contextlib.closing(snapshot_records(f))) for f in folders]
        yield heapq.merge(*streams, key=attrgetter("key"))


def take_snapshot(
    storage: Storage, directory: str, backup_id: str, *, node_id: str, epoch: int, replication_factor: int
) -> Manifest:
    """Write this node's snapshot and manifest. Blocking: run it in a thread."""
    check_backup_id(backup_id)
    folder = _directory(directory) / backup_id / node_id
    if (folder / MANIFEST).exists():
        return Manifest.load(folder)
    staging = folder.with_name(f".{node_id}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    storage.copy_to(staging)
    records, tombstones, corrupt = _census(staging)
    if corrupt:
        _leave_out(storage, staging, corrupt)
    snapshot = staging / SNAPSHOT
    manifest = Manifest(
        backup_id=backup_id,
        node_id=node_id,
        epoch=epoch,
        keys=records - tombstones,
        tombstones=tombstones,
        sha256=sha256_of(snapshot),
        size_bytes=snapshot.stat().st_size,
        created_unix=int(time.time()),
        path=str(folder),
        partitions=storage.partitions,
        replication_factor=replication_factor,
    )
    fields = {k: v for k, v in asdict(manifest).items() if k != "path"}
    (staging / MANIFEST).write_text(json.dumps(fields, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return manifest


def node_folders(directory: str, backup_id: str) -> list[Path]:
    check_backup_id(backup_id)
    root = _directory(directory) / backup_id
    folders = sorted(p for p in root.glob("*") if (p / MANIFEST).exists()) if root.is_dir() else []
    if not folders:
        raise NotFound(f"no backup {backup_id!r} in {directory}")
    return folders


def verify(directory: str, backup_id: str, node_id: str = "") -> tuple[list[Manifest], list[str]]:
    """Check each snapshot's checksum, then restore it into a scratch store and count its records.

    Returns the manifests and the problems found (empty when the backup is good).
    """
    manifests: list[Manifest] = []
    problems: list[str] = []
    for folder in node_folders(directory, backup_id):
        if node_id and folder.name != node_id:
            continue
        manifest = Manifest.load(folder)
        manifests.append(manifest)
        snapshot = folder / SNAPSHOT
        if not snapshot.exists():
            problems.append(f"{folder.name}: {SNAPSHOT} is missing")
            continue
        actual = sha256_of(snapshot)
        if actual != manifest.sha256:
            problems.append(
                f"{folder.name}: checksum mismatch (manifest {manifest.sha256[:12]}, file {actual[:12]})"
            )
            continue
        problems.extend(f"{folder.name}: {p}" for p in _restore_scratch(snapshot, manifest))
    if node_id and not manifests:
        raise NotFound(f"backup {backup_id!r} has no snapshot of node {node_id!r}")
    return manifests, problems


def _restore_scratch(snapshot: Path, manifest: Manifest) -> list[str]:
    """Open a copy of the snapshot as a store, and compare what it holds with the manifest."""
    with tempfile.TemporaryDirectory(prefix="kvnode-verify-") as tmp:
        shutil.copyfile(snapshot, Path(tmp) / SNAPSHOT)
        try:
            scratch = Storage(Path(tmp), partitions=manifest.partitions, map_size=1 << 30)
        except Exception as exc:  # noqa: BLE001 - any failure to open is the finding
            return [f"snapshot does not open as a store: {exc}"]
        try:
            stats = scratch.stats()
        finally:
            scratch.close()
        try:
            records, tombstones, corrupt = _census(Path(tmp))
        except (lmdb.Error, ValueError) as exc:
            return [f"snapshot records are unreadable: {exc}"]
    problems = [f"{len(corrupt)} records fail their checksum"] if corrupt else []
    if records - tombstones != manifest.keys or stats.keys != manifest.keys:
        problems.append(f"key count {records - tombstones} differs from the manifest's {manifest.keys}")
    if tombstones != manifest.tombstones:
        problems.append(f"tombstone count {tombstones} differs from the manifest's {manifest.tombstones}")
    return problems


def list_backups(directory: str) -> list[list[Manifest]]:
    """Each backup's manifests, oldest backup first."""
    root = _directory(directory)
    if not root.is_dir():
        return []
    backups = []
    for folder in root.iterdir():
        manifests = [Manifest.load(f) for f in sorted(folder.glob("*")) if (f / MANIFEST).exists()]
        if manifests:
            backups.append(manifests)
    return sorted(backups, key=lambda ms: (min(m.created_unix for m in ms), ms[0].backup_id))


def _partial(entry: Path) -> bool:
    return entry.name.startswith(".") and entry.name.endswith(".partial") and not entry.is_symlink()


def delete_backup(directory: str, backup_id: str) -> bool:
    """Remove a backup: only a folder whose every entry is a node's snapshot with its manifest, so
    that a wrong directory (a node's data folder, /tmp) is refused rather than deleted."""
    check_backup_id(backup_id)
    folder = _directory(directory) / backup_id
    if not folder.is_dir():
        return False
    entries = [e for e in folder.iterdir() if not _partial(e)]  # a crashed backup leaves these
    if not entries or any(e.is_symlink() or not (e / MANIFEST).is_file() for e in entries):
        raise FailedPrecondition(
            f"{folder} is not a backup (a folder of node snapshots with manifests); not deleted"
        )
    shutil.rmtree(folder)
    return True

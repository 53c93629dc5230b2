"""Backups in an object-store bucket: streamed snapshots with signed manifests.

Layout: ``<url>/<backup_id>/<node_id>/{snapshot.zst,manifest.json}``, as for folders. A node
streams its records from one LMDB read transaction (consistent, without pausing writes) through
zstd (:mod:`.recordstream`) and, with an encryption key, AES-GCM (:mod:`.encryption`) into a
multipart upload, hashing what it sends; nothing is staged on
disk, and memory holds a few upload parts. The manifest, which lists every object with its size
and SHA-256, is signed (:mod:`.signing`) and written last.

A node marks its folder ``uploading`` before it starts and removes the mark after the manifest, so
a node killed in the middle leaves a folder without a manifest: listing reports it incomplete and
verification fails it, and deleting the backup removes its objects. (The parts of the aborted
multipart upload are the bucket's to expire: see docs/operations.md.)

Verification reads every object back in a stream, checks its size and SHA-256 against the signed
manifest, and decodes every record (each carries its CRC32), counting keys and tombstones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from kvnode import failpoints
from kvnode.backup import recordstream
from kvnode.backup.encryption import plain, seal
from kvnode.backup.objectstore import Bucket
from kvnode.backup.signing import BadSignature, open_signed, sign
from kvnode.backup.snapshots import Manifest, merged
from kvnode.core.errors import InvalidArgument, NotFound
from kvnode.core.names import check_backup_id
from kvnode.core.records import Record
from kvnode.storage.engine import Storage
from kvnode.storage.schema import ChecksumError, decode_value, decode_version

SNAPSHOT = "snapshot.zst"
MANIFEST = "manifest.json"
UPLOADING = "uploading"
FORMAT = "kvsnap1+zstd"

_UPLOAD_DELAY = failpoints.duration("backup-upload-delay")


@dataclass
class Census:
    """Counts the records of a stream that it passes on, leaving out and noting those that fail
    their check."""

    records: int = 0
    tombstones: int = 0
    corrupt: dict[bytes, str] = field(default_factory=dict)

    def watch(self, pairs: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        for key, raw in pairs:
            try:
                _, tomb = decode_version(key, raw)
            except ChecksumError as exc:
                self.corrupt[key] = exc.reason
                continue
            self.records += 1
            self.tombstones += tomb
            yield key, raw


@dataclass
class Digest:
    """SHA-256 and size of the bytes that pass through."""

    size: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)

    def watch(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.size += len(chunk)
            self.sha256.update(chunk)
            yield chunk


def _stored_pairs(storage: Storage) -> Generator[tuple[bytes, bytes], None, None]:
    """Every stored record, in key order, from one read transaction."""
    with storage.reading() as txn:
        yield from txn.cursor(db=storage.dbs.data).iternext()


def _manifest(fields: dict[str, Any], url: str) -> Manifest:
    try:
        return Manifest(**{k: fields[k] for k in Manifest.__dataclass_fields__ if k != "path"}, path=url)
    except (KeyError, TypeError) as exc:
        raise BadSignature(f"manifest lacks a field: {exc}") from None


class BucketBackups:
    """The backups under one bucket URL, signed and checked with the store's key."""

    def __init__(self, url: str, key: bytes, encryption_key: bytes | None = None) -> None:
        self.bucket = Bucket(url)
        self._key = key
        self._encryption_key = encryption_key

    def _load(self, folder: str) -> tuple[Manifest, dict[str, Any]]:
        fields = open_signed(self.bucket.get(f"{folder}/{MANIFEST}"), self._key)
        manifest = _manifest(fields, self.bucket.url_of(folder))
        if f"{manifest.backup_id}/{manifest.node_id}" != folder:
            raise BadSignature(f"manifest belongs to {manifest.backup_id}/{manifest.node_id}, not here")
        return manifest, fields

    def take(
        self, storage: Storage, backup_id: str, *, node_id: str, epoch: int, replication_factor: int
    ) -> Manifest:
        """Stream this node's snapshot to the bucket and sign its manifest. Blocking: run it in a
        thread. Taking one that is complete returns its manifest."""
        check_backup_id(backup_id)
        folder = f"{backup_id}/{node_id}"
        if f"{folder}/{MANIFEST}" in self.bucket.objects(folder + "/"):
            with contextlib.suppress(BadSignature):
                return self._load(folder)[0]
        self.bucket.put(f"{folder}/{UPLOADING}", json.dumps({"started_unix": int(time.time())}).encode())
        census, digest = Census(), Digest()
        blocks = recordstream.encode(census.watch(_stored_pairs(storage)))
        if self._encryption_key is not None:
            blocks = seal(blocks, self._encryption_key)
        with self.bucket.writer(f"{folder}/{SNAPSHOT}") as out:
            for block in digest.watch(blocks):
                out.write(block)
                if _UPLOAD_DELAY:
                    time.sleep(_UPLOAD_DELAY)
        for key, reason in census.corrupt.items():
            storage.found_corrupt(key, reason, "backup")
        manifest = Manifest(
            backup_id=backup_id,
            node_id=node_id,
            epoch=epoch,
            keys=census.records - census.tombstones,
            tombstones=census.tombstones,
            sha256=digest.sha256.hexdigest(),
            size_bytes=digest.size,
            created_unix=int(time.time()),
            path=self.bucket.url_of(folder),
            partitions=storage.partitions,
            replication_factor=replication_factor,
        )
        fields = {k: v for k, v in asdict(manifest).items() if k != "path"}
        fields["format"] = FORMAT
        fields["encryption"] = "aes-256-gcm" if self._encryption_key is not None else "none"
        fields["objects"] = [{"name": SNAPSHOT, "size": digest.size, "sha256": manifest.sha256}]
        self.bucket.put(f"{folder}/{MANIFEST}", sign(fields, self._key))
        self.bucket.delete([f"{folder}/{UPLOADING}"])
        return manifest

    def _tree(self, prefix: str = "") -> dict[str, dict[str, set[str]]]:
        """The objects under ``prefix`` by backup id, then node folder."""
        tree: dict[str, dict[str, set[str]]] = {}
        for name in self.bucket.objects(prefix):
            parts = name.split("/", 2)
            if len(parts) == 3:
                tree.setdefault(parts[0], {}).setdefault(parts[1], set()).add(parts[2])
        return tree

    def _folders(self, backup_id: str) -> dict[str, set[str]]:
        """Each node folder of a backup and the object names in it."""
        check_backup_id(backup_id)
        return self._tree(backup_id + "/").get(backup_id, {})

    def verify(self, backup_id: str, node_id: str = "") -> tuple[list[Manifest], list[str]]:
        """Check every node's manifest signature, then stream each object it lists back: size,
        SHA-256, and every record. Returns the manifests and the problems (none when good)."""
        folders = self._folders(backup_id)
        if not folders:
            raise NotFound(f"no backup {backup_id!r} in {self.bucket.url}")
        if node_id and node_id not in folders:
            raise NotFound(f"backup {backup_id!r} has no snapshot of node {node_id!r}")
        manifests: list[Manifest] = []
        problems: list[str] = []
        for node in sorted(folders):
            if node_id and node != node_id:
                continue
            if MANIFEST not in folders[node]:
                problems.append(f"{node}: the upload never finished (no {MANIFEST}); delete the backup")
                continue
            try:
                manifest, fields = self._load(f"{backup_id}/{node}")
            except BadSignature as exc:
                problems.append(f"{node}: {MANIFEST} refused: {exc.message}")
                continue
            manifests.append(manifest)
            problems.extend(f"{node}: {p}" for p in self._check_objects(manifest, fields))
        return manifests, problems

    def _check_objects(self, manifest: Manifest, fields: dict[str, Any]) -> list[str]:
        folder = f"{manifest.backup_id}/{manifest.node_id}"
        problems: list[str] = []
        for obj in fields.get("objects", []):
            name = obj["name"]
            census, digest = Census(), Digest()
            try:
                chunks = digest.watch(self.bucket.stream(f"{folder}/{name}"))
                unreadable = ""
                try:
                    for _ in census.watch(recordstream.decode(plain(chunks, self._encryption_key))):
                        pass
                except InvalidArgument as exc:
                    unreadable = exc.message
                for _ in chunks:  # the rest, for the checksum
                    pass
            except NotFound:
                problems.append(f"{name} is missing")
                continue
            actual = digest.sha256.hexdigest()
            if digest.size != obj["size"] or actual != obj["sha256"]:
                problems.append(
                    f"{name} was changed: {digest.size} bytes with SHA-256 {actual[:12]}, the manifest "
                    f"says {obj['size']} bytes with {obj['sha256'][:12]}"
                )
                continue
            if unreadable:  # the counts of a stream read part way say nothing more
                problems.append(f"{name}: {unreadable}")
                continue
            if census.corrupt:
                problems.append(f"{name}: {len(census.corrupt)} records fail their checksum")
            keys = census.records - census.tombstones
            if keys != manifest.keys or census.tombstones != manifest.tombstones:
                problems.append(
                    f"{name} holds {keys} keys and {census.tombstones} "
                    f"tombstones, the manifest says {manifest.keys} and {manifest.tombstones}"
                )
        return problems

    def catalog(self) -> list[tuple[str, list[Manifest], list[str]]]:
        """Each backup: its id, the manifests that verify their signature, and its incomplete node
        folders (no manifest, or one that fails its signature). Oldest backup first."""
        backups = []
        for backup_id, folders in self._tree().items():
            manifests, incomplete = [], []
            for node, objects in sorted(folders.items()):
                try:
                    if MANIFEST not in objects:
                        raise BadSignature("no manifest")
                    manifests.append(self._load(f"{backup_id}/{node}")[0])
                except BadSignature:
                    incomplete.append(node)
            backups.append((backup_id, manifests, incomplete))
        return sorted(backups, key=lambda b: (min((m.created_unix for m in b[1]), default=0), b[0]))

    def delete(self, backup_id: str) -> bool:
        """Delete every object of a backup, complete or not."""
        folders = self._folders(backup_id)
        names = [f"{backup_id}/{node}/{obj}" for node, objs in folders.items() for obj in objs]
        if names:
            self.bucket.delete(names)
        return bool(names)

    def _records(self, manifest: Manifest) -> Generator[Record, None, None]:
        stream = self.bucket.stream(f"{manifest.backup_id}/{manifest.node_id}/{SNAPSHOT}")
        for key, raw in recordstream.decode(plain(stream, self._encryption_key)):
            yield decode_value(key, raw)

    def records(self, manifests: list[Manifest]) -> contextlib.AbstractContextManager[Iterator[Record]]:
        """Every record of the verified snapshots, as one key-ordered stream read from the bucket."""
        return merged([self._records(m) for m in manifests])

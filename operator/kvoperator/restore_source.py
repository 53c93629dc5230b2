"""Where a restore reads its backup from, as a pure function of the spec and the named KVBackup.

The observation fetches the KVBackup once per pass and calls :func:`resolve`; the StatefulSet step
(which mounts the backup's volume) and the restore step (which replays it) both read the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvoperator.spec import RestoreSpec


@dataclass(frozen=True)
class RestoreSource:
    """A backup to restore: its id, the claim of its volume, and its folder inside that volume; or
    no claim and the URL of its bucket as the path."""

    backup_id: str
    claim_name: str
    path: str


def resolve(restore: RestoreSpec, kvbackup: Mapping[str, Any] | None) -> tuple[RestoreSource | None, str]:
    """The backup ``restore`` names, or None and why not. ``kvbackup`` is the KVBackup that
    ``restore.backup_name`` names (None when it does not exist or none is named)."""
    if restore.backup_id:
        if restore.url:
            return RestoreSource(restore.backup_id, "", restore.url.rstrip("/")), ""
        return RestoreSource(restore.backup_id, restore.claim_name, restore.path.strip("/")), ""
    if kvbackup is None:
        return None, f"KVBackup {restore.backup_name} does not exist"
    status = kvbackup.get("status") or {}
    if status.get("phase") != "Succeeded" or not status.get("verified"):
        phase = status.get("phase", "Pending")
        return None, f"KVBackup {restore.backup_name} is not a verified backup (phase {phase})"
    source = RestoreSource(
        str(status["backupId"]),
        restore.claim_name or str(status.get("claimName", "")),
        restore.path.strip("/") or str(status.get("directory", "")).strip("/"),
    )
    return source, ""

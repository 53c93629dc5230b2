"""Where the Admin service may touch the node's file system: backup folders under ``--backup-root``.

Backup calls name a folder as the nodes see it. Without a root any folder goes (local development);
with one, a relative folder is taken under the root and an absolute one must lie inside it, both
after resolving ``..`` and symbolic links, so that no request can reach the data directory or
anything else. Locations that are not folders (``s3://...``) are left to the backup code.
"""

from __future__ import annotations

import os
from pathlib import Path

from kvnode.core.errors import InvalidArgument, PermissionDenied


class BackupRoot:
    def __init__(self, root: Path | None) -> None:
        self._root = root.resolve() if root is not None else None

    def folder(self, directory: str) -> str:
        """``directory`` as the backup code should use it, or PERMISSION_DENIED naming the root."""
        if self._root is None or "://" in directory:
            return directory
        if not directory:
            raise InvalidArgument("a backup directory is required")
        resolved = (self._root / directory).resolve()  # an absolute directory replaces the root
        if resolved != self._root and not resolved.is_relative_to(self._root):
            raise PermissionDenied(
                f"backup directory {directory!r} resolves to {resolved}, outside --backup-root {self._root}"
            )
        return os.fspath(resolved)

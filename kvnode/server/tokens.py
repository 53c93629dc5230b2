"""Bearer tokens from a file in kube-apiserver's static token format, read again when it changes.

Each line is ``token,name,uid`` with an optional fourth column of groups, quoted when there are
several: ``s3cr3t,app,1001,"kvstore:read,kvstore:write"``. Blank lines and lines starting with
``#`` are skipped. A line that does not parse is skipped with a warning naming its line number
(never its token), so that one typo does not lock every client out.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kvnode.core.errors import StartupError

log = logging.getLogger(__name__)

RECHECK = 1.0
"""Seconds between looks at the file's status: a removed token stops working within this."""


@dataclass(frozen=True)
class TokenUser:
    name: str
    uid: str
    groups: tuple[str, ...]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str, source: str) -> dict[bytes, TokenUser]:
    """Users by the SHA-256 of their token: a lookup by digest does not time the token itself."""
    tokens: dict[bytes, TokenUser] = {}
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 3 or not row[0].strip() or not row[1].strip():
            log.warning('%s line %d: expected token,name,uid[,"groups"]; line skipped', source, number)
            continue
        groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
        tokens[_digest(row[0].strip())] = TokenUser(row[1].strip(), row[2].strip(), groups)
    return tokens


class TokenFile:
    """The tokens of ``path``; :meth:`user` looks one up, reading the file again when its status
    changed (checked at most every :data:`RECHECK` seconds)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._tokens: dict[bytes, TokenUser] = {}
        self._next_check = 0.0
        try:
            self._reload()
        except OSError as exc:
            raise StartupError(f"--token-file: cannot read {path}: {exc.strerror}") from None

    def _reload(self) -> None:
        stat = os.stat(self._path)
        signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if signature != self._signature:
            self._tokens = parse_tokens(self._path.read_text(encoding="utf-8"), str(self._path))
            self._signature = signature
            log.info("--token-file %s: %d tokens loaded", self._path, len(self._tokens))

    def user(self, token: str) -> TokenUser | None:
        now = time.monotonic()
        if now >= self._next_check:
            with self._lock:
                self._next_check = now + RECHECK
                try:
                    self._reload()
                except OSError as exc:
                    log.warning(
                        "--token-file %s: cannot read it (%s); keeping the tokens read before",
                        self._path,
                        exc.strerror,
                    )
        return self._tokens.get(_digest(token))

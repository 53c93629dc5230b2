"""Signed manifests: a backup in a bucket proves it was written by a node holding the store's key.

Anyone with write access to a bucket can change an object and its checksum in the manifest
together, so the manifest itself is signed with HMAC-SHA256 under a key that only the store holds
(``--backup-hmac-key-file``; a Secret on Kubernetes). The signature covers the manifest's canonical
JSON (sorted keys, no spaces) without the signature field.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from kvnode.core.errors import InvalidArgument, StartupError

SIGNATURE = "signature"
MIN_KEY_BYTES = 16


class BadSignature(InvalidArgument):
    """A manifest that is not valid JSON, carries no signature, or whose signature does not match."""


def load_key(path: str) -> bytes:
    """The key in a file (its bytes, surrounding whitespace stripped); a node refuses to start with
    a key it cannot read or one too short to resist guessing."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise StartupError(f"cannot read the backup HMAC key file {path}: {exc.strerror or exc}") from None
    if len(key) < MIN_KEY_BYTES:
        raise StartupError(
            f"the backup HMAC key in {path} has {len(key)} bytes; use at least {MIN_KEY_BYTES} random bytes"
        )
    return key


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def _mac(fields: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, _canonical(fields), hashlib.sha256).hexdigest()


def sign(fields: dict[str, Any], key: bytes) -> bytes:
    """The manifest document: ``fields`` plus their signature, readable JSON."""
    return (json.dumps({**fields, SIGNATURE: _mac(fields, key)}, indent=2, sort_keys=True) + "\n").encode()


def open_signed(document: bytes, key: bytes) -> dict[str, Any]:
    """The fields of a signed manifest; raises BadSignature saying what is wrong with it."""
    try:
        fields = json.loads(document)
    except ValueError as exc:
        raise BadSignature(f"manifest is not valid JSON ({exc})") from None
    if not isinstance(fields, dict) or not isinstance(fields.get(SIGNATURE), str):
        raise BadSignature("manifest carries no signature")
    signature = fields.pop(SIGNATURE)
    if not hmac.compare_digest(signature, _mac(fields, key)):
        raise BadSignature("manifest signature does not match: it was changed, or signed with another key")
    return fields

"""Node ids, addresses and backup ids: checked the same way by the client, the server and the
operator, each refusal saying what a good value looks like."""

from __future__ import annotations

import re
import time

from kvnode.core.errors import InvalidArgument

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})$")
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")
_BACKUP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def parse_host_port(value: str, *, what: str = "address") -> tuple[str, int]:
    """Split HOST:PORT, refusing anything else with a message that says what was wrong."""
    match = _HOST_PORT.match(value.strip())
    if not match:
        raise ValueError(f"invalid {what} {value!r}: expected HOST:PORT, e.g. 127.0.0.1:7000")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ValueError(f"invalid {what} {value!r}: port must be 1-65535")
    return match["host"].strip("[]"), port


def validate_node_id(value: str) -> str:
    if not _NODE_ID.match(value):
        raise ValueError(
            f"invalid node id {value!r}: use 1-63 letters, digits, '.', '-' or '_', "
            "starting with a letter or digit"
        )
    return value


def check_backup_id(backup_id: str) -> str:
    """A backup id names a folder (or an object prefix): no separators, no dot-dot, no surprises."""
    if not _BACKUP_ID.match(backup_id):
        raise InvalidArgument(f"invalid backup id {backup_id!r}: use 1-128 letters, digits, '.', '-' or '_'")
    return backup_id


def new_backup_id() -> str:
    """A backup id from the current UTC time, e.g. 20260101-120000."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())

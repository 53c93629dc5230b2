"""How kvctl prints: raw bytes, escaped text, aligned tables, and JSON.

Keys and values are bytes. JSON carries them as UTF-8 text when they decode, else as base64, and
says which in a sibling ``*_encoding`` field, so a script never has to guess.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Sequence
from typing import Any

from kvnode.client import EndpointStatus, Entry, Version

_ESCAPES = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


def encoded(data: bytes) -> tuple[str, str]:
    """``(text, "utf-8")`` when the bytes are UTF-8, else ``(base64, "base64")``."""
    try:
        return data.decode(), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


def printable(data: bytes) -> str:
    """One line of text for a key or value: invalid UTF-8 and line breaks escaped."""
    return data.decode(errors="backslashreplace").translate(_ESCAPES)


def version_json(version: Version) -> dict[str, Any]:
    return {"hlc": version.hlc, "node_id": version.node_id}


def bytes_json(name: str, data: bytes) -> dict[str, str]:
    text, encoding = encoded(data)
    return {name: text, f"{name}_encoding": encoding}


def entry_json(entry: Entry, *, value: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = bytes_json("key", entry.key)
    if value:
        out.update(bytes_json("value", entry.value))
    out["version"] = version_json(entry.version)
    return out


def json_text(document: object) -> str:
    return json.dumps(document)


def emit_json(document: object) -> None:
    sys.stdout.write(json_text(document) + "\n")


def emit_line(text: str) -> None:
    sys.stdout.write(text + "\n")


def emit_raw(data: bytes) -> None:
    """The exact bytes, plus a newline only for a terminal (so the prompt is not glued on)."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    if sys.stdout.isatty() and not data.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.buffer.flush()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def error(message: str) -> None:
    """A one-line error on stderr, prefixed like every kvctl error."""
    sys.stderr.write("kvctl: " + " ".join(message.split()) + "\n")


def status_json(report: EndpointStatus) -> dict[str, Any]:
    s = report.status
    if s is None:
        return {"address": report.address, "ok": False, "error": str(report.error)}
    return {
        "address": report.address,
        "ok": True,
        "node_id": s.node_id,
        "version": s.version,
        "epoch": s.epoch,
        "keys": s.keys,
        "tombstones": s.tombstones,
        "hints_pending": s.hints_pending,
        "hint_bytes": s.hint_bytes,
        "partitions_owned": s.partitions_owned,
        "partitions": s.partitions,
        "replication_factor": s.replication_factor,
        "peers": [
            {"id": p.id, "address": p.address, "reachable": p.reachable, "hints_pending": p.hints_pending}
            for p in s.peers
        ],
        "rebuilding": s.rebuilding,
        "used_bytes": s.used_bytes,
        "map_size_bytes": s.map_size_bytes,
        "last_backup_unix": s.last_backup_unix,
    }


_STATUS_HEADERS = ("ENDPOINT", "NODE", "EPOCH", "KEYS", "HINTS", "PARTITIONS", "PEERS UP", "REBUILDING")


def status_table(reports: Sequence[EndpointStatus]) -> str:
    rows: list[list[object]] = []
    for report in reports:
        s = report.status
        if s is None:
            rows.append([report.address, "unreachable", "-", "-", "-", "-", "-", "-"])
            continue
        up = sum(p.reachable for p in s.peers)
        rows.append(
            [
                report.address,
                s.node_id,
                s.epoch,
                s.keys,
                s.hints_pending,
                f"{s.partitions_owned}/{s.partitions}",
                f"{up}/{len(s.peers)}",
                "yes" if s.rebuilding else "no",
            ]
        )
    return table(_STATUS_HEADERS, rows)

"""Operation records: what a workload did, when, and how each call ended.

One RPC is one :class:`Op`. Its ``outcome`` is one of

* ``ok``: the call returned; a write took effect, a read returned ``value``;
* ``fail``: the call definitely did not take effect (a refused request), or a read that failed;
* ``info``: indeterminate, in Jepsen's sense: a write that timed out or was answered UNAVAILABLE may
  or may not have taken effect, now or later (a hint or anti-entropy can still carry it).

Times are seconds on the monotonic clock, relative to the history's start. A :class:`History` also
carries the faults that were injected while it was recorded and, after healing, the final values
read at ``ALL``; it saves to and loads from JSON so that a failing run can be checked again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

OpKind = Literal["read", "write", "delete"]
Outcome = Literal["ok", "fail", "info"]

OK: Outcome = "ok"
FAIL: Outcome = "fail"
INFO: Outcome = "info"

FORMAT = "kvstore-chaos-history/1"


@dataclass
class Op:
    """One client call.

    ``value`` is the value written (a write), the value read (a read; ``None`` means absent), or
    ``None`` for a delete (a delete is a write of "absent"). ``version`` is the version the node
    reported: the written version for an ok write or delete, the read version for an ok read of a
    present key.
    """

    id: int
    session: int
    key: str
    kind: OpKind
    value: str | None
    level: str
    invoke: float
    complete: float
    outcome: Outcome
    endpoint: str = ""
    error: str = ""
    version: tuple[int, str] | None = None

    @property
    def is_write(self) -> bool:
        return self.kind != "read"

    @property
    def written(self) -> str | None:
        """What a write leaves in the key: its value, or None (absent) for a delete."""
        return self.value if self.kind == "write" else None

    def describe(self) -> str:
        what = {
            "read": f"read -> {self.value!r}" if self.outcome == OK else "read",
            "write": f"write {self.value!r}",
            "delete": "delete",
        }[self.kind]
        end = "..." if self.outcome == INFO else f"{self.complete:.3f}"
        extra = f" ({self.error})" if self.error else ""
        return (
            f"#{self.id} s{self.session} {self.key} {what} [{self.level}] "
            f"{self.outcome} {self.invoke:.3f}-{end} via {self.endpoint}{extra}"
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = list(self.version) if self.version else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Op:
        version = data.get("version")
        return cls(**{**data, "version": (int(version[0]), str(version[1])) if version else None})


@dataclass
class FaultEvent:
    """A fault, from ``start`` to ``end`` (None while it lasts), on the history's clock."""

    kind: str
    target: str
    start: float
    end: float | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultEvent:
        return cls(**data)


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    faults: list[FaultEvent] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    # After healing: key -> value read at ALL (None = absent). Empty until read.
    final: dict[str, str | None] = field(default_factory=dict)

    def by_key(self) -> dict[str, list[Op]]:
        out: dict[str, list[Op]] = {}
        for op in self.ops:
            out.setdefault(op.key, []).append(op)
        return out

    @property
    def keys(self) -> list[str]:
        return sorted({op.key for op in self.ops})

    @property
    def duration(self) -> float:
        return max((op.complete for op in self.ops), default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "meta": self.meta,
            "faults": [f.to_json() for f in self.faults],
            "final": self.final,
            "ops": [op.to_json() for op in self.ops],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> History:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a chaos history (format {data.get('format')!r}, expected {FORMAT!r})")
        return cls(
            ops=[Op.from_json(o) for o in data["ops"]],
            faults=[FaultEvent.from_json(f) for f in data.get("faults", [])],
            meta=dict(data.get("meta", {})),
            final=dict(data.get("final", {})),
        )

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=None, separators=(",", ":")))
        return path

    @classmethod
    def load(cls, path: Path) -> History:
        return cls.from_json(json.loads(path.read_text()))

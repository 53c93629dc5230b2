"""Hand-made histories for the checker's unit tests."""

from __future__ import annotations

import itertools

from e2e.chaos.history import History, Op, OpKind, Outcome

_ids = itertools.count()


def op(
    kind: OpKind,
    value: str | None,
    invoke: float,
    complete: float,
    outcome: Outcome = "ok",
    *,
    key: str = "k",
    session: int = 0,
    level: str = "LINEARIZABLE",
    version: tuple[int, str] | None = None,
) -> Op:
    return Op(
        id=next(_ids),
        session=session,
        key=key,
        kind=kind,
        value=value,
        level=level,
        invoke=invoke,
        complete=complete,
        outcome=outcome,
        version=version,
    )


def w(value: str, invoke: float, complete: float, outcome: Outcome = "ok", **kw: object) -> Op:
    return op("write", value, invoke, complete, outcome, **kw)  # type: ignore[arg-type]


def d(invoke: float, complete: float, outcome: Outcome = "ok", **kw: object) -> Op:
    return op("delete", None, invoke, complete, outcome, **kw)  # type: ignore[arg-type]


def r(value: str | None, invoke: float, complete: float, outcome: Outcome = "ok", **kw: object) -> Op:
    return op("read", value, invoke, complete, outcome, **kw)  # type: ignore[arg-type]


def history(*ops: Op, final: dict[str, str | None] | None = None) -> History:
    return History(ops=list(ops), final=dict(final or {}))

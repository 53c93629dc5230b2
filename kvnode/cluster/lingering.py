"""Work that a request leaves running after it has been answered.

A write is acknowledged once a quorum has it; its copy to a slower replica goes on in the
background, and so does every copy of a write that timed out. That work holds the write's records
(in a peer link's queue, in a message on its way), so the server must count the request's memory
until it ends, not only until the answer has left: otherwise a slow replica lets a node take in
new writes while the old ones pile up behind it. The server names, per request, what to tell
(:func:`hold_with`); the coordinator reports each task it leaves behind (:func:`linger`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

Keeper = Callable[["asyncio.Future[Any]"], None]

_keeper: ContextVar[Keeper | None] = ContextVar("kvnode_lingering_keeper", default=None)


def hold_with(keeper: Keeper | None) -> Token[Keeper | None]:
    """For the request being handled in this context, report lingering work to ``keeper``."""
    return _keeper.set(keeper)


def release(token: Token[Keeper | None]) -> None:
    _keeper.reset(token)


def linger(task: asyncio.Future[Any]) -> None:
    """``task`` belongs to the request being handled and may outlive its answer."""
    keeper = _keeper.get()
    if keeper is not None:
        keeper(task)

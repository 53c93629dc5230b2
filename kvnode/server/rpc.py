"""The one place where RPC handlers meet errors and metrics.

A servicer marks each RPC method with :func:`handler`; :func:`instrument` wraps every marked method
of one servicer when the server is assembled, with the metrics and the default level passed in. A
``KVError`` becomes its gRPC status with its message, anything unexpected becomes INTERNAL with a
pointer to the log (never a traceback on the wire), and each call is counted and timed by method,
consistency level and status code.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from kvnode.core.errors import KVError
from kvnode.core.levels import Level

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
S = TypeVar("S")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]
BoundHandler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]

_METHOD = "__rpc_method__"
_LEVEL_NAMES = {level.value: level.name for level in Level}


class RequestMetrics(Protocol):
    def observe_request(self, method: str, consistency: str, code: str, seconds: float) -> None: ...


def handler(method: str) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Mark a servicer method as the handler of RPC ``method`` (the name its metrics carry)."""

    def mark(fn: Handler[Req, Resp]) -> Handler[Req, Resp]:
        setattr(fn, _METHOD, method)
        return fn

    return mark


def instrument(servicer: S, metrics: RequestMetrics, default_level: Level) -> S:
    """Wrap every :func:`handler` method of ``servicer`` in place; returns it, ready to register."""
    for name in dir(type(servicer)):
        method = getattr(getattr(type(servicer), name), _METHOD, None)
        if method is not None:
            setattr(servicer, name, _guarded(getattr(servicer, name), method, metrics, default_level.name))
    return servicer


def _guarded(fn: BoundHandler, method: str, metrics: RequestMetrics, default_level: str) -> BoundHandler:
    @functools.wraps(fn)
    async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        consistency = getattr(request, "consistency", None)
        level = "" if consistency is None else _LEVEL_NAMES.get(consistency, default_level)
        try:
            response = await fn(request, context)
        except KVError as exc:
            status, details = exc.code, exc.message
        except grpc.aio.AbortError:  # the handler aborted the call itself
            aborted = context.code()
            metrics.observe_request(method, level, aborted.name if aborted else "UNKNOWN", _since(started))
            raise
        except Exception:
            log.exception("%s failed", method)
            status, details = grpc.StatusCode.INTERNAL, f"internal error in {method}; see the node's log"
        else:
            metrics.observe_request(method, level, "OK", _since(started))
            return response
        # Counted before the status leaves: a client that has its answer finds it in the metrics.
        metrics.observe_request(method, level, status.name, _since(started))
        await context.abort(status, details)
        raise AssertionError("unreachable")  # pragma: no cover - abort always raises

    return run


def _since(started: float) -> float:
    return time.perf_counter() - started

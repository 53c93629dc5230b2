"""The one place where RPC handlers meet errors and metrics.

Every handler is wrapped by :func:`handler`: a ``KVError`` becomes its gRPC status with its message,
anything unexpected becomes INTERNAL with a pointer to the log (never a traceback on the wire), and
each call is counted and timed by method, consistency level and status code.
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
from kvnode.metrics import NodeMetrics

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")

_LEVEL_NAMES = {level.value: level.name for level in Level}


class Instrumented(Protocol):
    metrics: NodeMetrics
    default_level: Level


Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]


def handler(method: str) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    def wrap(fn: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(fn)
        async def run(self: Instrumented, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
            started = time.perf_counter()
            code = "OK"
            consistency = getattr(request, "consistency", None)
            level = "" if consistency is None else _LEVEL_NAMES.get(consistency, self.default_level.name)
            try:
                return await fn(self, request, context)
            except KVError as exc:
                code = exc.code.name
                await context.abort(exc.code, exc.message)
            except grpc.aio.AbortError:
                code = context.code().name if context.code() else "UNKNOWN"
                raise
            except Exception:
                code = "INTERNAL"
                log.exception("%s failed", method)
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"internal error in {method}; see the node's log"
                )
            finally:
                self.metrics.observe_request(method, level, code, time.perf_counter() - started)
            raise AssertionError("unreachable")  # pragma: no cover - abort always raises

        return run

    return wrap

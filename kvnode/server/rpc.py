"""The one place where RPC handlers meet errors and metrics.

A servicer marks each RPC method with :func:`handler`; :func:`instrument` wraps every marked method
of one servicer when the server is assembled, with the metrics and the default level passed in. A
``KVError`` becomes its gRPC status with its message, a request that does not parse becomes
INVALID_ARGUMENT, anything unexpected becomes INTERNAL with a pointer to the log (never a traceback
on the wire; the log gets one per method every few seconds, however many fail), and each call is
counted and timed by method, consistency level and status code.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError

from kvnode.core.errors import InvalidArgument, KVError
from kvnode.core.levels import Level
from kvnode.core.logs import RateLimitedLog
from kvnode.server import admission as admissions
from kvnode.server.admission import Admission, Overloaded, Ticket

log = logging.getLogger(__name__)
failures = RateLimitedLog(log)  # a flood of failing requests logs one traceback per method a while

Req = TypeVar("Req")
Resp = TypeVar("Resp")
S = TypeVar("S")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]
BoundHandler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]

_METHOD = "__rpc_method__"
_READS = "__rpc_reads_its_request__"
_LEVEL_NAMES = {level.value: level.name for level in Level}


@dataclass(frozen=True)
class Malformed:
    """What a handler gets instead of a request whose bytes do not parse (see :func:`lenient`)."""

    error: str


def lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """A request deserializer that hands over a :class:`Malformed` instead of raising."""

    def run(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return Malformed(str(exc) or "the request does not parse")

    return run


class RequestMetrics(Protocol):
    def observe_request(self, method: str, consistency: str, code: str, seconds: float) -> None: ...


def handler(method: str) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Mark a servicer method as the handler of RPC ``method`` (the name its metrics carry)."""

    def mark(fn: Handler[Req, Resp]) -> Handler[Req, Resp]:
        setattr(fn, _METHOD, method)
        return fn

    return mark


def instrument(
    servicer: S, metrics: RequestMetrics, default_level: Level, admission: Admission | None = None
) -> S:
    """Wrap every :func:`handler` method of ``servicer`` in place; returns it, ready to register.
    With ``admission``, its requests count against those caps, and each handler reads its request
    from the call itself, once there is room for it (:func:`reads_its_request` says so to
    :func:`kvnode.server.serving.register`)."""
    for name in dir(type(servicer)):
        method = getattr(getattr(type(servicer), name), _METHOD, None)
        if method is not None:
            wrapped = _guarded(getattr(servicer, name), method, metrics, default_level.name, admission)
            setattr(servicer, name, wrapped)
    return servicer


def reads_its_request(handler: object) -> bool:
    """True for a handler that takes the call's request stream and reads the message itself."""
    return bool(getattr(handler, _READS, False))


async def _receive(ticket: Ticket, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    """The request of a call, taken in once there is room for the largest one there may be."""
    await ticket.make_room()
    request = await context.read()
    if request is grpc.aio.EOF:  # type: ignore[attr-defined]  # the stubs lack it
        return Malformed("the call carries no request message")
    ticket.hold_request(request.ByteSize() if not isinstance(request, Malformed) else 0)
    return request


def _guarded(
    fn: BoundHandler, method: str, metrics: RequestMetrics, default_level: str, admission: Admission | None
) -> BoundHandler:
    @functools.wraps(fn)
    async def run(call: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        level = ""
        ticket: Ticket | None = None
        try:
            if admission is None:
                request = call
            else:
                ticket = admitted = admission.admit()
                # When the RPC ends, its answer has left. (The stubs want a class; any callable does.)
                context.add_done_callback(lambda _: admitted.release())  # type: ignore[arg-type]
                request = await _receive(ticket, context)
            consistency = getattr(request, "consistency", None)
            level = "" if consistency is None else _LEVEL_NAMES.get(consistency, default_level)
            if isinstance(request, Malformed):
                raise InvalidArgument(f"malformed {method} request: {request.error}")
            with admissions.handling(ticket):
                response = await fn(request, context)
            if ticket is not None:
                ticket.hold_answer(response.ByteSize())
        except Overloaded as exc:
            metrics.observe_request(method, level, exc.code.name, _since(started))
            await context.abort(exc.code, exc.message, trailing_metadata=admissions.METADATA)
        except KVError as exc:
            status, details = exc.code, exc.message
        except grpc.aio.AbortError:  # the handler aborted the call itself
            aborted = context.code()
            metrics.observe_request(method, level, aborted.name if aborted else "UNKNOWN", _since(started))
            raise
        except Exception:  # noqa: BLE001 - anything unexpected becomes INTERNAL, logged (rate-limited)
            failures.log(method, logging.ERROR, "%s failed", method, exc_info=True)
            status, details = grpc.StatusCode.INTERNAL, f"internal error in {method}; see the node's log"
        else:
            metrics.observe_request(method, level, "OK", _since(started))
            return response
        # Counted before the status leaves: a client that has its answer finds it in the metrics.
        metrics.observe_request(method, level, status.name, _since(started))
        await context.abort(status, details)
        raise AssertionError("unreachable")  # pragma: no cover - abort always raises

    setattr(run, _READS, admission is not None)
    return run


def _since(started: float) -> float:
    return time.perf_counter() - started

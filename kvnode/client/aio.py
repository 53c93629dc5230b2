"""The asyncio client. :class:`kvnode.client.KVClient` runs this same code on a private loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import TypedDict

from kvnode.api.v1 import admin_pb2, kv_pb2
from kvnode.client import transport as rpc
from kvnode.client.admin import AsyncAdmin
from kvnode.client.channels import ChannelPool
from kvnode.client.credentials import Credentials
from kvnode.client.endpoints import Endpoints, parse_endpoints
from kvnode.client.retry import RETRYABLE, RetryPolicy
from kvnode.client.routing import Router
from kvnode.client.transport import Caller, Req, Resp, Sleep
from kvnode.client.types import (
    Attempt,
    ClientClosed,
    ConsistencyLike,
    Entry,
    KeyLike,
    ScanPage,
    WriteResult,
    to_bytes,
    to_consistency,
)
from kvnode.core.membership import Membership
from kvnode.core.records import Version

DEFAULT_PAGE = 1000
"""The node's default page size, used when a scan has a ``limit`` but no ``page_size``."""


class ClientOptions(TypedDict, total=False):
    """The keyword arguments of :class:`AsyncKVClient`, for :class:`KVClient` to pass on (mypy
    checks the two against each other)."""

    timeout: float
    consistency: ConsistencyLike
    retries: int
    backoff: float
    max_backoff: float
    retry_writes: bool
    retry_policy: RetryPolicy | None
    attempt_timeout: float | None
    route: bool
    refresh_interval: float
    unreachable_for: float
    on_attempt: Callable[[Attempt], None] | None
    sleep: Sleep
    credentials: Credentials | None


Puts = Mapping[str, KeyLike] | Mapping[bytes, KeyLike] | Iterable[tuple[KeyLike, KeyLike]]


class AsyncKVClient:
    """A client for a kvnode cluster; safe to share between any number of concurrent tasks.

    ``endpoints`` are ``HOST:PORT`` strings (a list, or one comma-separated string). Calls that
    fail with UNAVAILABLE or DEADLINE_EXCEEDED move on to another endpoint and are retried with
    backoff within ``timeout`` seconds (see :class:`RetryPolicy`). With ``route=True`` single-key
    calls go first to a replica of the key. ``on_attempt`` sees every RPC the client sends (for
    logging or tests); ``sleep`` replaces the backoff sleep (for tests). ``credentials``: TLS and a
    bearer token (see :class:`~kvnode.client.credentials.Credentials`); plaintext without.
    """

    def __init__(
        self,
        endpoints: str | Iterable[str],
        *,
        timeout: float = 5.0,
        consistency: ConsistencyLike = None,
        retries: int = 4,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        retry_writes: bool = True,
        retry_policy: RetryPolicy | None = None,
        attempt_timeout: float | None = None,
        route: bool = True,
        refresh_interval: float = 30.0,
        unreachable_for: float = 10.0,
        on_attempt: Callable[[Attempt], None] | None = None,
        sleep: Sleep = asyncio.sleep,
        credentials: Credentials | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.endpoints = parse_endpoints(endpoints)
        self.timeout = timeout
        self.consistency = to_consistency(consistency)
        self.retry_policy = retry_policy or RetryPolicy(
            attempts=retries + 1, backoff=backoff, max_backoff=max_backoff, retry_writes=retry_writes
        )
        self._endpoints = Endpoints(self.endpoints, unreachable_for=unreachable_for)
        self._on_attempt = on_attempt
        self._pool = ChannelPool(credentials=credentials)
        self._closed = False
        self._caller = Caller(
            self._pool,
            self.retry_policy,
            timeout=timeout,
            attempt_timeout=attempt_timeout,
            sleep=sleep,
            observe=self._observe,
        )
        self._router = (
            Router(
                self._pool,
                self._fetch_membership,
                refresh_interval=refresh_interval,
                usable=self._endpoints.reachable,
            )
            if route
            else None
        )
        self.admin = AsyncAdmin(self._caller, self._endpoints)

    @property
    def membership(self) -> Membership | None:
        """The membership calls are routed by: None until it was learnt (or with ``route=False``)."""
        placement = self._router.placement if self._router is not None else None
        return placement.membership if placement is not None else None

    # -- plumbing ------------------------------------------------------------------------------

    def _observe(self, attempt: Attempt) -> None:
        if attempt.unreachable:
            self._endpoints.mark_unreachable(attempt.address)
        if attempt.error is not None and attempt.error.code in RETRYABLE and self._router is not None:
            self._router.invalidate()
        if self._on_attempt is not None:
            self._on_attempt(attempt)

    async def _fetch_membership(self) -> Membership:
        reply = await self._caller.call(
            rpc.GET_MEMBERSHIP, admin_pb2.GetMembershipRequest(), self._endpoints.order()
        )
        return Membership.from_proto(reply)

    def _targets(self, key: bytes | None) -> list[str]:
        if self._closed:
            raise ClientClosed()
        """Replicas of the key first (when routing), then the endpoints, each address once."""
        routed = self._router.replicas(key) if self._router is not None and key is not None else []
        return list(dict.fromkeys(routed + self._endpoints.order()))

    async def _send(
        self, method: rpc.Rpc[Req, Resp], request: Req, key: bytes | None, timeout: float | None
    ) -> Resp:
        return await self._caller.call(method, request, self._targets(key), timeout=timeout)

    def _level(self, consistency: ConsistencyLike) -> int:
        return self.consistency if consistency is None else to_consistency(consistency)

    # -- single keys ---------------------------------------------------------------------------

    async def put(
        self,
        key: KeyLike,
        value: KeyLike,
        *,
        consistency: ConsistencyLike = None,
        timeout: float | None = None,
        return_previous: bool = False,
    ) -> WriteResult:
        k = to_bytes(key)
        request = kv_pb2.PutRequest(
            key=k,
            value=to_bytes(value, "value"),
            consistency=self._level(consistency),  # type: ignore[arg-type]
            return_previous=return_previous,
        )
        reply = await self._send(rpc.PUT, request, k, timeout)
        return WriteResult(Version.from_proto(reply.version), Entry.from_proto(reply.previous))

    async def get(
        self, key: KeyLike, *, consistency: ConsistencyLike = None, timeout: float | None = None
    ) -> Entry | None:
        """The key's entry, or None when it does not exist (or was deleted)."""
        k = to_bytes(key)
        request = kv_pb2.GetRequest(key=k, consistency=self._level(consistency))  # type: ignore[arg-type]
        return Entry.from_proto((await self._send(rpc.GET, request, k, timeout)).kv)

    async def delete(
        self,
        key: KeyLike,
        *,
        consistency: ConsistencyLike = None,
        timeout: float | None = None,
        return_previous: bool = False,
    ) -> WriteResult:
        """Delete a key (deleting a missing key succeeds); the version is the tombstone's."""
        k = to_bytes(key)
        request = kv_pb2.DeleteRequest(
            key=k,
            consistency=self._level(consistency),  # type: ignore[arg-type]
            return_previous=return_previous,
        )
        reply = await self._send(rpc.DELETE, request, k, timeout)
        return WriteResult(Version.from_proto(reply.version), Entry.from_proto(reply.previous))

    # -- ranges --------------------------------------------------------------------------------

    async def scan_page(
        self,
        start: KeyLike = b"",
        end: KeyLike = b"",
        prefix: KeyLike = b"",
        *,
        limit: int = 0,
        token: bytes = b"",
        keys_only: bool = False,
        consistency: ConsistencyLike = None,
        timeout: float | None = None,
    ) -> ScanPage:
        """One page of keys in ``[start, end)`` that begin with ``prefix``, in byte order. ``limit``
        0 is the node's page size. Pass the returned token back for the next page; a page may be
        short even when more follow, and an empty token means there are no more."""
        request = kv_pb2.ScanRequest(
            start_key=to_bytes(start),
            end_key=to_bytes(end),
            prefix=to_bytes(prefix),
            limit=limit,
            continuation_token=token,
            keys_only=keys_only,
            consistency=self._level(consistency),  # type: ignore[arg-type]
        )
        reply = await self._send(rpc.SCAN, request, None, timeout)
        entries = [Entry(kv.key, kv.value, Version.from_proto(kv.version)) for kv in reply.kvs]
        return ScanPage(entries, reply.continuation_token)

    async def scan(
        self,
        start: KeyLike = b"",
        end: KeyLike = b"",
        prefix: KeyLike = b"",
        *,
        limit: int | None = None,
        page_size: int = 0,
        keys_only: bool = False,
        consistency: ConsistencyLike = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Entry]:
        """Every matching entry, page after page (``timeout`` applies to each page); at most
        ``limit`` entries when it is set."""
        token = b""
        left = limit
        while left is None or left > 0:
            size = page_size if left is None else min(page_size or DEFAULT_PAGE, left)
            page = await self.scan_page(
                start,
                end,
                prefix,
                limit=size,
                token=token,
                keys_only=keys_only,
                consistency=consistency,
                timeout=timeout,
            )
            for entry in page.entries:
                yield entry
            if left is not None:
                left -= len(page.entries)
            token = page.token
            if not token:
                return

    # -- batches -------------------------------------------------------------------------------

    async def batch_write(
        self,
        puts: Puts = (),
        deletes: Iterable[KeyLike] = (),
        *,
        consistency: ConsistencyLike = None,
        timeout: float | None = None,
    ) -> list[Version]:
        """Puts (a mapping or key/value pairs) then deletes, in one call. Each mutation stands on
        its own (no transaction); the versions come back in that order. The node refuses batches
        over its item and byte limits (1000 items, 4 MiB by default) with InvalidArgument."""
        pairs = puts.items() if isinstance(puts, Mapping) else puts
        mutations = [kv_pb2.Mutation(key=to_bytes(k), value=to_bytes(v, "value")) for k, v in pairs]
        mutations += [kv_pb2.Mutation(key=to_bytes(k), delete=True) for k in deletes]
        request = kv_pb2.BatchWriteRequest(
            mutations=mutations,
            consistency=self._level(consistency),  # type: ignore[arg-type]
        )
        reply = await self._send(rpc.BATCH_WRITE, request, None, timeout)
        return [Version.from_proto(v) for v in reply.versions]

    async def batch_get(
        self, keys: Iterable[KeyLike], *, consistency: ConsistencyLike = None, timeout: float | None = None
    ) -> list[Entry | None]:
        """One result per key, in order; None for a missing key."""
        request = kv_pb2.BatchGetRequest(
            keys=[to_bytes(k) for k in keys],
            consistency=self._level(consistency),  # type: ignore[arg-type]
        )
        reply = await self._send(rpc.BATCH_GET, request, None, timeout)
        return [Entry.from_proto(kv) for kv in reply.kvs]

    # -- life cycle ----------------------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        if self._router is not None:
            await self._router.close()
        await self._pool.close()

    async def __aenter__(self) -> AsyncKVClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

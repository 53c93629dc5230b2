"""The blocking client: the asyncio client, run on a private event loop in a daemon thread.

Every method is the async client's method, wrapped once by :func:`blocking` (or :func:`iterating`
for scans), so the two clients cannot drift apart. Any number of threads may share one
:class:`KVClient`: their calls run concurrently on the one loop, over the same channels.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, Unpack

from kvnode.client.admin import AsyncAdmin
from kvnode.client.aio import AsyncKVClient, ClientOptions
from kvnode.client.credentials import Credentials
from kvnode.client.types import ClientClosed
from kvnode.core.membership import Membership

A = TypeVar("A")
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class LoopThread:
    """An event loop running forever in a daemon thread, until :meth:`stop`."""

    def __init__(self, name: str = "kvclient-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("KVClient called from its own event loop; use AsyncKVClient there")
        if self.loop.is_closed():
            coro.close()
            raise ClientClosed()
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt: do not leave the call running
            raise

    def iterate(self, source: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> T:
            return await anext(source)

        try:
            while True:
                try:
                    yield self.run(step())
                except StopAsyncIteration:
                    return
        finally:
            aclose: Callable[[], Awaitable[None]] | None = getattr(source, "aclose", None)
            if aclose is not None and self.loop.is_running():

                async def close() -> None:
                    await aclose()

                self.run(close())

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
        if not self.loop.is_closed():
            self.loop.close()


class Bridge(Generic[A]):
    """A blocking face for an async object ``A`` whose coroutines run on ``loop``."""

    def __init__(self, target: A, loop: LoopThread) -> None:
        self._target = target
        self._loop = loop


def blocking(
    fn: Callable[Concatenate[A, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Bridge[A], P], R]:
    def run(self: Bridge[A], /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._loop.run(fn(self._target, *args, **kwargs))

    functools.update_wrapper(run, fn)
    return run


def iterating(
    fn: Callable[Concatenate[A, P], AsyncIterator[T]],
) -> Callable[Concatenate[Bridge[A], P], Iterator[T]]:
    def run(self: Bridge[A], /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._loop.iterate(fn(self._target, *args, **kwargs))

    functools.update_wrapper(run, fn)
    return run


class Admin(Bridge[AsyncAdmin]):
    """Blocking admin calls; see :class:`kvnode.client.admin.AsyncAdmin`. A client's ``admin``
    shares its channels; :meth:`connect` makes one of its own, to be closed after use."""

    @classmethod
    def connect(
        cls,
        endpoints: str | Iterable[str] = (),
        *,
        timeout: float = 10.0,
        retries: int = 0,
        credentials: Credentials | None = None,
    ) -> Admin:
        """See :meth:`AsyncAdmin.connect`."""
        admin = cls(
            AsyncAdmin.connect(endpoints, timeout=timeout, retries=retries, credentials=credentials),
            LoopThread("kvadmin-loop"),
        )
        admin._owns_loop = True
        return admin

    _owns_loop = False

    def close(self) -> None:
        if self._owns_loop:
            if self._loop.loop.is_running():
                self._loop.run(self._target.close())
            self._loop.stop()

    def __enter__(self) -> Admin:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    health = blocking(AsyncAdmin.health)
    status = blocking(AsyncAdmin.status)
    status_all = blocking(AsyncAdmin.status_all)
    membership = blocking(AsyncAdmin.membership)
    set_membership = blocking(AsyncAdmin.set_membership)
    join = blocking(AsyncAdmin.join)
    decommission = blocking(AsyncAdmin.decommission)
    run_anti_entropy = blocking(AsyncAdmin.run_anti_entropy)
    partition_digests = blocking(AsyncAdmin.partition_digests)
    backup = blocking(AsyncAdmin.backup)
    verify_backup = blocking(AsyncAdmin.verify_backup)
    list_backups = blocking(AsyncAdmin.list_backups)
    delete_backup = blocking(AsyncAdmin.delete_backup)
    restore = blocking(AsyncAdmin.restore)


class KVClient(Bridge[AsyncKVClient]):
    """The blocking client. Takes the same arguments as :class:`AsyncKVClient` and has the same
    methods; ``scan`` returns a plain iterator. Close it (or use ``with``) to stop its thread."""

    def __init__(self, endpoints: str | Iterable[str], **options: Unpack[ClientOptions]) -> None:
        super().__init__(AsyncKVClient(endpoints, **options), LoopThread())

    put = blocking(AsyncKVClient.put)
    get = blocking(AsyncKVClient.get)
    delete = blocking(AsyncKVClient.delete)
    scan_page = blocking(AsyncKVClient.scan_page)
    scan = iterating(AsyncKVClient.scan)
    batch_write = blocking(AsyncKVClient.batch_write)
    batch_get = blocking(AsyncKVClient.batch_get)

    @property
    def admin(self) -> Admin:
        return Admin(self._target.admin, self._loop)

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._target.endpoints

    @property
    def membership(self) -> Membership | None:
        return self._target.membership

    def close(self) -> None:
        if self._loop.loop.is_running():
            self._loop.run(self._target.close())
        self._loop.stop()

    def __enter__(self) -> KVClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

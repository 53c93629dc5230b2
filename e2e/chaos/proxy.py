"""A fault-injecting TCP proxy between nodes, for partitions without root.

Each ordered pair of nodes ``(a, b)`` gets a *link*: a listening port on loopback that forwards to
``b``. Node ``a`` is started with that port as ``b``'s address in its ``--peers`` (see
``ProcessCluster(peer_address=...)``), so every byte from ``a`` to ``b`` (and the replies on that
connection) crosses the link. A link is in one of three modes:

* ``pass``: forward;
* ``drop``: forward nothing, in either direction, and hang: new connections are accepted and then
  left silent, as when packets are lost; when the link passes again, the connections that lost data
  are closed so the peers reconnect cleanly;
* ``delay``: forward each chunk after ``delay`` seconds.

The proxy runs its own asyncio loop in a background thread, so the test's loop (and the workload in
it) never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from kvnode.testing.processes import free_port

PASS = "pass"
DROP = "drop"
DELAY = "delay"
CHUNK = 65536


@dataclass(eq=False)
class _Conn:
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tainted: bool = False

    def close(self) -> None:
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.close()


@dataclass(eq=False)
class Link:
    src: str
    dst: str
    target: tuple[str, int]
    port: int
    mode: str = PASS
    delay: float = 0.0
    conns: set[_Conn] = field(default_factory=set)
    server: asyncio.Server | None = None


class ProxyMesh:
    """Links between named nodes; call :meth:`close` (or use as a context manager) when done."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.links: dict[tuple[str, str], Link] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy", daemon=True)
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, None], timeout: float = 10.0) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- set-up ---------------------------------------------------------------------------------

    def add(self, src: str, dst: str, target: str) -> int:
        """A link from ``src`` to ``dst`` at ``target`` (host:port); returns its listening port."""
        host, _, port = target.rpartition(":")
        link = Link(src, dst, (host, int(port)), free_port(self.host))
        self.links[(src, dst)] = link
        self._run(self._listen(link))
        return link.port

    def address(self, src: str, dst: str) -> str:
        return f"{self.host}:{self.links[(src, dst)].port}"

    async def _listen(self, link: Link) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(link, reader, writer)

        link.server = await asyncio.start_server(accept, self.host, link.port)

    async def _serve(self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn([writer])
        link.conns.add(conn)
        try:
            while link.mode == DROP:  # accepted, but the other side is "unreachable": hang
                conn.tainted = True
                if not await reader.read(CHUNK):
                    return
            try:
                up_reader, up_writer = await asyncio.open_connection(*link.target)
            except OSError:
                return
            conn.writers.append(up_writer)
            await asyncio.gather(
                self._pump(link, conn, reader, up_writer), self._pump(link, conn, up_reader, writer)
            )
        finally:
            link.conns.discard(conn)
            conn.close()

    @staticmethod
    async def _pump(
        link: Link, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await reader.read(CHUNK):
                if link.mode == DROP:
                    conn.tainted = True
                    continue
                if link.mode == DELAY and link.delay > 0:
                    await asyncio.sleep(link.delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            conn.close()

    # -- faults ---------------------------------------------------------------------------------

    def set(self, src: str, dst: str, mode: str, delay: float = 0.0) -> None:
        if mode not in (PASS, DROP, DELAY):
            raise ValueError(f"unknown link mode {mode!r}")
        self._run(self._set(self.links[(src, dst)], mode, delay))

    async def _set(self, link: Link, mode: str, delay: float) -> None:
        link.mode, link.delay = mode, delay
        if mode != DROP:
            for conn in [c for c in link.conns if c.tainted]:
                conn.close()

    def isolate(self, node: str, others: Iterable[str]) -> None:
        """Cut ``node`` off from ``others``, both ways."""
        for other in others:
            if other != node:
                self.set(node, other, DROP)
                self.set(other, node, DROP)

    def heal(self) -> None:
        for src, dst in list(self.links):
            self.set(src, dst, PASS)

    def close(self) -> None:
        async def shutdown() -> None:
            for link in self.links.values():
                for conn in list(link.conns):
                    conn.close()
                if link.server is not None:
                    link.server.close()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._loop.is_running():
            with contextlib.suppress(Exception):
                self._run(shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ProxyMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

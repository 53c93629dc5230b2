"""Health tells the truth: a node whose writes are stuck says NOT_SERVING, and SIGTERM ends it
within a bounded time whatever its writer does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvnode.client import AsyncKVClient
from kvnode.storage.groupcommit import STUCK_AFTER
from kvnode.testing.processes import ProcessCluster, is_serving, wait_for
from tests.hostile.conftest import running

GRACE = 2.0


def writer_pid(cluster: ProcessCluster) -> int:
    """The node's storage writer process: its only child."""
    pid = cluster[0].pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ProcessCluster]:
    with running(tmp_path, 1, replication_factor=1, extra_args=["--grace-period", f"{GRACE:g}s"]) as cluster:
        yield cluster


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


async def test_stuck_writes_make_the_node_not_serving_until_they_finish(node: ProcessCluster) -> None:
    """Before: health stayed SERVING while no write could commit."""
    address = node[0].address
    async with AsyncKVClient([address], timeout=STUCK_AFTER * 4, retries=0) as kv:
        with frozen(writer_pid(node)):
            write = asyncio.create_task(kv.put("stuck", b"v"))
            await asyncio.to_thread(wait_for, lambda: not is_serving(address), STUCK_AFTER * 3, "NOT_SERVING")
            assert not write.done()
        await asyncio.wait_for(write, STUCK_AFTER * 2)  # the commit finishes once the writer runs
    await asyncio.to_thread(wait_for, lambda: is_serving(address), 30, "SERVING again")


def test_sigterm_ends_a_node_whose_writer_is_stuck_in_bounded_time(node: ProcessCluster) -> None:
    """Before: SIGTERM hung for more than 35 s."""
    address = node[0].address

    async def start_write() -> None:
        async with AsyncKVClient([address], timeout=60, retries=0) as kv:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(kv.put("stuck", b"v"), 1.0)

    with frozen(writer_pid(node)):
        asyncio.run(start_write())
        started = time.monotonic()
        code = node.terminate(0, timeout=60)
        took = time.monotonic() - started
    assert took < 2 * GRACE + 15, took  # the server's grace, then the writer's shutdown bound
    assert code != 0  # writes were lost in the writer: the node says so
    assert "did not finish its commits" in node[0].log_tail(50)

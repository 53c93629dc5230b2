"""The group committer with its real writer process: batching, visibility, isolation, crashes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import pytest

from kvnode.core.errors import InvalidArgument, StorageError
from kvnode.core.records import Record, Version
from kvnode.storage.engine import Storage
from kvnode.storage.groupcommit import GroupCommitter
from kvnode.storage.ops import ApplyRecords, WriteOp
from kvnode.storage.writes import WriteTxn


class Recorder:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.failures: list[StorageError] = []

    def committed(self, ops: int, seconds: float) -> None:
        self.batches.append(ops)


@pytest.fixture
async def committer(store: Storage) -> AsyncIterator[tuple[GroupCommitter, Recorder]]:
    recorder = Recorder()
    gc = GroupCommitter(store, observer=recorder, on_failure=recorder.failures.append)
    gc.start(asyncio.get_running_loop())
    yield gc, recorder
    await gc.close()


def record(i: int) -> Record:
    return Record(f"k{i}".encode(), b"v", Version(i + 1, "a"))


async def put(gc: GroupCommitter, i: int) -> tuple[bool, Record | None]:
    [outcome] = await gc.submit(ApplyRecords.of([(record(i), False)]))
    assert not isinstance(outcome, BaseException), outcome
    return outcome


class Explodes(WriteOp[None]):
    """An operation that writes, then fails: its own write must not survive."""

    def run(self, txn: WriteTxn) -> None:
        txn.apply(Record(b"exploded", b"v", Version(1, "a")))
        raise RuntimeError("boom")


async def test_concurrent_writes_share_commits(
    committer: tuple[GroupCommitter, Recorder], store: Storage
) -> None:
    gc, recorder = committer
    results = await asyncio.gather(*(put(gc, i) for i in range(500)))
    assert all(applied for applied, _ in results)
    assert sum(recorder.batches) == 500
    assert len(recorder.batches) < 500 / 4, recorder.batches  # many writes per fsync
    assert store.stats().keys == 500


async def test_a_write_is_visible_once_its_submit_returns(
    committer: tuple[GroupCommitter, Recorder], store: Storage
) -> None:
    gc, _ = committer
    for i in range(20):
        await put(gc, i)
        assert store.get(f"k{i}".encode()) is not None


async def test_one_failing_operation_does_not_fail_its_neighbours(
    committer: tuple[GroupCommitter, Recorder], store: Storage
) -> None:
    gc, _ = committer
    half_done = (b"half-done", b"v", 1, "a", False, False)
    broken: list[Awaitable[object]] = [
        gc.submit(ApplyRecords([half_done, (None, b"v", 1, "a", False, False)])),  # type: ignore[list-item]
        gc.submit(Explodes()),
        gc.submit("drop_everything"),  # type: ignore[arg-type]
    ]
    outcomes = await asyncio.gather(
        *(put(gc, i) for i in range(50)),
        *broken,
        *(put(gc, i) for i in range(50, 100)),
        return_exceptions=True,
    )
    mixed, exploded, unknown = outcomes[50:53]
    # A record that cannot be stored (a key that is not bytes) is refused alone; its neighbour is kept.
    assert isinstance(mixed, list) and mixed[0] == (True, None)
    assert isinstance(mixed[1], InvalidArgument) and "bytes key" in mixed[1].message
    assert isinstance(exploded, RuntimeError) and "boom" in str(exploded)
    assert store.get(b"half-done") is not None
    assert store.get(b"exploded") is None  # the failed operation's own write was rolled back
    assert isinstance(unknown, ValueError) and "not a write operation" in str(unknown)
    assert [o for o in outcomes[:50] + outcomes[53:] if isinstance(o, BaseException)] == []
    assert store.stats().keys == 101


async def test_writes_fail_clearly_when_the_writer_process_dies(
    committer: tuple[GroupCommitter, Recorder], store: Storage
) -> None:
    gc, recorder = committer
    await put(gc, 1)
    process = gc._process
    assert process is not None
    process.kill()
    with pytest.raises(StorageError, match="storage writer process exited"):
        await asyncio.wait_for(put(gc, 2), timeout=10)
    with pytest.raises(StorageError, match="storage writer process exited"):
        await put(gc, 3)
    assert store.get(b"k1") is not None
    for _ in range(100):  # event-loop turns: a closed pipe stays readable, yet is reported once
        await asyncio.sleep(0)
    assert len(recorder.failures) == 1


async def test_the_reader_follows_the_map_as_the_writer_grows_it(
    committer: tuple[GroupCommitter, Recorder], store: Storage
) -> None:
    gc, _ = committer
    before = store.map_size()
    big = [(Record(b"big%04d" % i, b"x" * 4000, Version(1, "a")), False) for i in range(600)]
    for start in range(0, len(big), 50):
        await gc.submit(ApplyRecords.of(big[start : start + 50]))
    assert store.get(b"big0599") is not None  # read through a map the writer process grew
    assert store.map_size() > before

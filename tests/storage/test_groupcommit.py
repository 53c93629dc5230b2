from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kvnode.record import Record, Version
from kvnode.storage.engine import Storage, WriteTxn
from kvnode.storage.groupcommit import CommitObserver, GroupCommitter


class Recorder(CommitObserver):
    def __init__(self) -> None:
        self.batches: list[int] = []

    def committed(self, ops: int, seconds: float) -> None:
        self.batches.append(ops)


@pytest.fixture
async def committer(store: Storage) -> AsyncIterator[tuple[GroupCommitter, Recorder]]:
    recorder = Recorder()
    gc = GroupCommitter(store, observer=recorder)
    gc.start(asyncio.get_running_loop())
    yield gc, recorder
    await asyncio.to_thread(gc.close)


def put_op(i: int):  # type: ignore[no-untyped-def]
    return lambda txn: txn.apply(Record(f"k{i}".encode(), b"v", Version(i + 1, "a")))


async def test_concurrent_writes_share_commits(
    committer: tuple[GroupCommitter, Recorder], store: Storage
) -> None:
    gc, recorder = committer
    results = await asyncio.gather(*(gc.submit(put_op(i)) for i in range(500)))
    assert all(applied for applied, _ in results)
    assert sum(recorder.batches) == 500
    assert len(recorder.batches) < 500 / 4, recorder.batches  # many writes per fsync
    assert store.stats().keys == 500


async def test_a_write_is_visible_once_its_submit_returns(
    committer: tuple[GroupCommitter, Recorder], store: Storage
) -> None:
    gc, _ = committer
    for i in range(20):
        await gc.submit(put_op(i))
        assert store.get(f"k{i}".encode()) is not None


async def test_one_failing_operation_does_not_fail_its_neighbours(
    committer: tuple[GroupCommitter, Recorder], store: Storage
) -> None:
    gc, _ = committer

    def broken(txn: WriteTxn) -> None:
        txn.apply(Record(b"half-done", b"v", Version(1, "a")))
        raise ValueError("boom")

    outcomes = await asyncio.gather(
        *(gc.submit(put_op(i)) for i in range(50)),
        gc.submit(broken),
        *(gc.submit(put_op(i)) for i in range(50, 100)),
        return_exceptions=True,
    )
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], ValueError)
    assert store.stats().keys == 100
    assert store.get(b"half-done") is None  # the failed operation's own write was rolled back

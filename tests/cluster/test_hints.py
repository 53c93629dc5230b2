"""Hinted handoff on a real store: hints are kept durably per target, replayed as repairs once the
target answers, dropped (and counted by reason) when they expire, overflow or lose their target,
and their totals survive a restart."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from kvnode.cluster.hints import HintedHandoff
from kvnode.core.membership import Membership
from kvnode.core.records import Record
from kvnode.testing.processes import wait_until
from tests.cluster.harness import Node, WallClock, membership, record, running_node

MAX_AGE = 60.0
WAIT = 20.0
THREE = membership(["n1", "n2", "n3"])


@contextlib.asynccontextmanager
async def handing_off(
    folder: Path, members: Membership = THREE, *, wall: WallClock | None = None, max_bytes: int = 1 << 20
) -> AsyncIterator[tuple[Node, HintedHandoff]]:
    async with running_node(folder, members, wall=wall) as node:
        hints = HintedHandoff(
            node.storage,
            node.committer,
            node.roster,
            node.topology,
            node.clock,
            node.metrics,
            max_age=MAX_AGE,
            max_bytes=max_bytes,
        )
        try:
            yield node, hints
        finally:
            await hints.close()


async def kept(hints: HintedHandoff, target: str, count: int) -> None:
    """Wait until ``count`` hints for ``target`` are committed (defer stores in the background)."""
    await wait_until(
        lambda: hints.totals().get(target, (0, 0))[0] == count, WAIT, f"{count} hints for {target}"
    )


async def defer_and_keep(hints: HintedHandoff, batches: dict[str, list[Record]]) -> None:
    """Defer each target's records and wait until all are committed."""
    for target, batch in batches.items():
        hints.defer(target, batch)
    for target, batch in batches.items():
        await kept(hints, target, len(batch))


def records(*names: str) -> list[Record]:
    return [record(name, f"value of {name}", hlc=i + 1) for i, name in enumerate(names)]


def stored_for(node: Node, target: str) -> list[Record | None]:
    return [h.record for h in node.storage.hints(target)]


async def test_hints_are_kept_durably_for_each_target(tmp_path: Path) -> None:
    async with handing_off(tmp_path) as (node, hints):
        for_n2, for_n3 = records("a", "b"), records("c")
        await defer_and_keep(hints, {"n2": for_n2, "n3": for_n3})
        assert stored_for(node, "n2") == for_n2
        assert stored_for(node, "n3") == for_n3
        assert hints.totals() == node.storage.hint_totals()
        assert node.metric("kvnode_hints_stored_total", peer="n2") == 2
        assert node.metric("kvnode_hints_pending", peer="n2") == 2
        assert node.metric("kvnode_hint_bytes", peer="n3") == hints.totals()["n3"][1]


async def test_hints_are_replayed_as_repairs_once_their_target_answers(tmp_path: Path) -> None:
    async with handing_off(tmp_path) as (node, hints):
        n2, n3 = node.peer("n2"), node.peer("n3")
        for_n2, for_n3 = records("a", "b", "c"), records("d")
        await defer_and_keep(hints, {"n2": for_n2, "n3": for_n3})

        n2.fail()
        assert await hints.replay_all() == 1  # a target that is down does not hold up the others
        assert n3.records == {r.key: r for r in for_n3}
        assert stored_for(node, "n2") == for_n2
        assert n2.calls_to("apply"), "the replay tried n2"

        n2.recover()
        assert await hints.replay_all() == 3
        assert n2.records == {r.key: r for r in for_n2}
        assert all(call.repair for call in n2.calls_to("apply") + n3.calls_to("apply"))
        assert hints.totals() == {}
        assert node.storage.hints() == []
        assert node.metric("kvnode_hints_replayed_total", peer="n2") == 3
        assert node.metric("kvnode_hints_pending", peer="n2") == 0


async def test_expired_hints_are_dropped_and_counted(tmp_path: Path) -> None:
    wall = WallClock()
    async with handing_off(tmp_path, wall=wall) as (node, hints):
        hints.defer("n2", records("old-1", "old-2"))
        await kept(hints, "n2", 2)
        wall.ms += int(MAX_AGE * 1000) + 1
        fresh = records("fresh")
        hints.defer("n2", fresh)
        await kept(hints, "n2", 3)

        assert await hints.replay_all() == 1
        assert list(node.peer("n2").records.values()) == fresh
        assert node.metric("kvnode_hints_dropped_total", peer="n2", reason="expired") == 2
        assert node.storage.hints() == [] and hints.totals() == {}


async def test_a_full_backlog_drops_new_hints_and_counts_them(tmp_path: Path) -> None:
    async with handing_off(tmp_path, max_bytes=1) as (node, hints):
        first = records("a")
        hints.defer("n2", first)
        await kept(hints, "n2", 1)
        hints.defer("n2", records("b", "c"))  # the backlog is at its bound: dropped at once
        hints.defer("n3", records("d"))  # the bound is per target
        await kept(hints, "n3", 1)
        assert stored_for(node, "n2") == first
        assert node.metric("kvnode_hints_dropped_total", peer="n2", reason="full") == 2


async def test_hints_for_a_non_member_are_dropped_when_deferred_and_when_replayed(tmp_path: Path) -> None:
    async with handing_off(tmp_path) as (node, hints):
        hints.defer("n9", records("a"))
        assert node.metric("kvnode_hints_dropped_total", peer="n9", reason="not_member") == 1
        hints.defer("n3", records("b", "c"))
        await kept(hints, "n3", 2)
        assert node.storage.hints("n9") == []

        await node.topology.install(membership(["n1", "n2"], epoch=2))  # n3 has left
        assert await hints.replay_all() == 0
        assert node.metric("kvnode_hints_dropped_total", peer="n3", reason="not_member") == 2
        assert node.storage.hints() == [] and hints.totals() == {}


async def test_hint_totals_survive_a_restart(tmp_path: Path) -> None:
    async with handing_off(tmp_path) as (_, hints):
        await defer_and_keep(hints, {"n2": records("a", "b"), "n3": records("c")})
        before = hints.totals()

    async with handing_off(tmp_path) as (node, reopened):
        assert reopened.totals() == before
        assert node.metric("kvnode_hints_pending", peer="n2") == 2
        assert node.metric("kvnode_hint_bytes", peer="n3") == before["n3"][1]
        assert await reopened.replay_all() == 3
        assert set(node.peer("n2").records) == {b"a", b"b"}

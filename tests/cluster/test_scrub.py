"""The scrub against this node's real store (real damage on disk) and fake peers: a pass finds every
record that fails its check, repairs it from the other replicas, recomputes the digest that hid it
and compares it with the members', upgrades records written before checksums, and reports what no
replica can repair. Reads that meet a corrupt record outside the coordinator get it repaired at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kvnode.cluster.antientropy import AntiEntropy
from kvnode.cluster.scrub import Scrubber
from kvnode.core.membership import Membership
from kvnode.core.placement import partition_of
from kvnode.storage.schema import Corrupt, has_checksum
from kvnode.testing.damage import flip_byte
from kvnode.testing.processes import wait_until
from tests.cluster.harness import PARTITIONS, Node, membership, record, running_node
from tests.storage.test_checksum import legacy

GUARD = 20.0
ROTTEN = record("rotten", "<<a value that rots on disk>>", hlc=5, writer="n2")
NEIGHBOURS = [record(f"fine-{n}", "fine", hlc=5, writer="n2") for n in range(20)]


@contextlib.asynccontextmanager
async def scrubbing(folder: Path, members: Membership) -> AsyncIterator[tuple[Node, Scrubber]]:
    async with running_node(folder, members) as node:
        anti_entropy = AntiEntropy(
            node.id, node.storage, node.roster, node.topology, node.clock, node.metrics, tombstone_grace=1e6
        )
        scrubber = Scrubber(
            node.id, node.storage, node.committer, node.roster, node.topology, anti_entropy, node.metrics
        )
        node.storage.report_corruption(scrubber.found)
        repairs = asyncio.get_running_loop().create_task(scrubber.run_repairs())
        try:
            yield node, scrubber
        finally:
            repairs.cancel()
            await asyncio.gather(repairs, return_exceptions=True)


async def rot(node: Node) -> None:
    await node.store(ROTTEN, *NEIGHBOURS)
    flip_byte(node.storage.path / "data.mdb", ROTTEN.value, offset=9)


async def test_a_pass_repairs_from_the_replicas_and_fixes_the_digest_that_hid_it(tmp_path: Path) -> None:
    async with scrubbing(tmp_path, membership(["n1", "n2", "n3"])) as (node, scrubber):
        await rot(node)
        for peer in node.peers.values():
            peer.store(ROTTEN, *NEIGHBOURS)
        partition = partition_of(ROTTEN.key, PARTITIONS)
        (theirs,) = await node.peer("n2").digests([partition])
        assert node.storage.digests([partition]) == [theirs]  # equal digests: anti-entropy sees nothing

        stats = await scrubber.run_pass()

        assert (stats.records, stats.corrupt, stats.repaired, stats.digests_fixed) == (21, 1, 1, 1)
        assert node.storage.get(ROTTEN.key) == ROTTEN
        assert node.storage.digests([partition]) == [theirs]
        assert any(partition in c.partitions for c in node.peer("n2").calls_to("digests"))
        assert node.metric("kvnode_scrub_records_total") == 21
        assert node.metric("kvnode_corrupt_records_total", found_by="scrub") == 1
        assert node.metric("kvnode_corrupt_repairs_total", by="scrub") == 1
        assert node.metric("kvnode_scrub_unrepaired_records") == 0
        assert (await scrubber.run_pass()).corrupt == 0


async def test_a_node_alone_reports_what_it_cannot_repair(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with scrubbing(tmp_path, membership(["n1"], rf=1)) as (node, scrubber):
        await rot(node)
        with caplog.at_level(logging.ERROR, "kvnode.cluster.scrub"):
            stats = await scrubber.run_pass()
        assert (stats.corrupt, stats.repaired) == (1, 0)
        assert node.metric("kvnode_scrub_unrepaired_records") == 1
        assert "1 records fail their checksum and no other replica answered with an intact" in caplog.text
        assert isinstance(node.storage.get(ROTTEN.key), Corrupt)  # never served, never dropped


async def test_records_written_before_checksums_get_one(tmp_path: Path) -> None:
    async with scrubbing(tmp_path, membership(["n1"], rf=1)) as (node, scrubber):
        await node.store(*NEIGHBOURS)
        old = {r.key: legacy(r) for r in NEIGHBOURS}
        data = node.storage.dbs.data
        node.storage.write(lambda txn: [txn.txn.put(k, raw, db=data) for k, raw in old.items()])

        stats = await scrubber.run_pass()

        assert (stats.checksums_added, stats.corrupt, stats.digests_fixed) == (len(old), 0, 0)
        with node.storage.reading() as txn:
            assert all(has_checksum(txn.get(k, db=node.storage.dbs.data)) for k in old)
        assert node.storage.get_many(list(old)) == NEIGHBOURS
        assert node.metric("kvnode_scrub_checksums_added_total") == len(old)


async def test_a_corrupt_record_met_by_a_partition_page_is_repaired_at_once(tmp_path: Path) -> None:
    async with scrubbing(tmp_path, membership(["n1", "n2", "n3"])) as (node, _):
        await rot(node)
        for peer in node.peers.values():
            peer.store(ROTTEN)

        page, _ = node.storage.fetch_partition(partition_of(ROTTEN.key, PARTITIONS), b"", 1000)

        assert ROTTEN.key not in [r.key for r in page]
        await wait_until(lambda: node.storage.get(ROTTEN.key) == ROTTEN, GUARD, "the repair")
        assert node.metric("kvnode_corrupt_records_total", found_by="fetch") == 1
        assert node.metric("kvnode_corrupt_repairs_total", by="scrub") == 1

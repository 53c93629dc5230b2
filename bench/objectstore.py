"""Backups to a bucket against the object-store library alone, side by side in one run.

For one store: the time a node takes to back up to an S3 bucket (read its records from LMDB,
compress them with zstd, upload them as a multipart stream, sign the manifest), against the time
obstore alone takes to upload the very same snapshot bytes from a local file with the same part
size and concurrency. The ratio is the cost of our pipeline over the transfer itself (target
1.5x at most). Then the backup's and a restore's throughput in MB/s of live data, and the node's peak
memory during each (anonymous RSS, what a pod's limit and the OOM killer weigh), beside its
memory before. The bucket is moto's S3 server on loopback (:mod:`kvnode.testing.s3server`), so
the transfer is a local HTTP server's speed, not a cloud's; the ratio is what carries over.

    python bench/objectstore.py              # a 300 MB store, about two minutes
    python bench/objectstore.py --mb 50
    python bench/objectstore.py --smoke      # a few seconds
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import obstore
from obstore.store import S3Store

from bench.common import say, table, work_dir
from kvnode.backup.objectstore import WRITE_BUFFER, WRITE_PARTS
from kvnode.testing.fill import MB, fill
from kvnode.testing.memory import PeakMemory
from kvnode.testing.processes import ProcessCluster
from kvnode.testing.s3server import S3Server


def library_upload(s3: S3Server, bucket: str, source: Path) -> float:
    """Seconds for obstore alone to upload ``source`` as a multipart stream, as the node does."""
    store = S3Store.from_url(
        f"s3://{bucket}", config={"endpoint": s3.endpoint, "access_key_id": s3.env["AWS_ACCESS_KEY_ID"],
        "secret_access_key": s3.env["AWS_SECRET_ACCESS_KEY"], "region": s3.env["AWS_REGION"]},
        client_options={"allow_http": True},
    )  # fmt: skip
    started = time.perf_counter()
    with (
        source.open("rb") as f,
        obstore.open_writer(
            store, "library/snapshot.zst", buffer_size=WRITE_BUFFER, max_concurrency=WRITE_PARTS
        ) as out,
    ):
        for block in iter(lambda: f.read(4 << 20), b""):
            out.write(block)
    return time.perf_counter() - started


def run(args: argparse.Namespace, root: Path) -> None:
    key = root / "hmac.key"
    key.write_text(secrets.token_hex(32))
    with S3Server(root / "moto.log") as s3:
        url = s3.bucket("bench")
        node_args = ["--backup-hmac-key-file", str(key), "--max-map-size", "0"]
        with ProcessCluster(root / "source", size=1, extra_args=node_args, env=s3.env) as source:
            source.start()
            data = fill(source.endpoints, args.mb)
            with PeakMemory([source[0].pid]) as memory:
                memory.reset()
                before = memory.now()
                started = time.perf_counter()
                manifest = source.admin.backup(source[0].address, url, "b1", timeout=3600)
                backup_s = time.perf_counter() - started
                backup_peak = memory.read().anon
        snapshot = root / "snapshot.zst"
        snapshot.write_bytes(s3.s3().get_object(Bucket="bench", Key="b1/kv-0/snapshot.zst")["Body"].read())
        upload_s = min(library_upload(s3, "bench", snapshot) for _ in range(args.rounds))
        snapshot.unlink()
        with ProcessCluster(root / "target", size=1, extra_args=node_args, env=s3.env) as target:
            target.start()
            with PeakMemory([target[0].pid]) as memory:
                memory.reset()
                restore_before = memory.now()
                started = time.perf_counter()
                target.admin.restore(url, "b1", timeout=3600)
                restore_s = time.perf_counter() - started
                restore_peak = memory.read().anon
    say(
        f"Backups to a bucket (moto on loopback): {data / MB:.0f} MB of live data in {manifest.keys} keys, "
        f"snapshot {manifest.size_bytes / MB:.0f} MB compressed; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    def row(case: str, seconds: float, before: int = 0, peak: int = 0) -> list[str]:
        memory = [f"{before / MB:.0f} MB", f"{peak / MB:.0f} MB", f"{(peak - before) / MB:.0f} MB"]
        return [case, f"{seconds:.2f}", f"{data / MB / seconds:.1f}", *(memory if peak else ["", "", ""])]

    say(
        table(
            ["case", "seconds", "MB/s (live data)", "node RssAnon before", "peak", "growth"],
            [
                row("backup to the bucket", backup_s, before, backup_peak),
                row("the same bytes, obstore alone", upload_s),
                row("restore from the bucket", restore_s, restore_before, restore_peak),
            ],
            title="Absolute figures",
        )
    )
    say(
        table(
            ["ratio", "value", "target"],
            [["backup / library upload of the same bytes", f"{backup_s / upload_s:.2f}x", "<= 1.5x"]],
            title="Ratios",
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=300, help="megabytes of live data in the store")
    parser.add_argument("--rounds", type=int, default=3, help="library uploads (the fastest counts)")
    parser.add_argument("--smoke", action="store_true", help="a few seconds in all: checks that it runs")
    parser.add_argument("--work-dir", type=Path, default=None, help="where data goes (default: a temp dir)")
    args = parser.parse_args()
    if args.smoke:
        args.mb, args.rounds = 5, 1
    with work_dir(args.work_dir) as root:
        run(args, root)


if __name__ == "__main__":
    main()

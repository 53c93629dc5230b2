"""kvctl's live progress line: drawn while a call runs when asked for, gone when it ends."""

from __future__ import annotations

import io

from kvnode.cli.progress import Progress, rate
from kvnode.testing.processes import wait_for


def test_the_live_line_is_redrawn_while_the_call_runs_and_cleared_after() -> None:
    stream = io.StringIO()
    with Progress("kv-0: backing up", live=True, stream=stream) as progress:
        wait_for(lambda: "\rkvctl: kv-0: backing up ... " in stream.getvalue(), 10, "a live line")
    assert stream.getvalue().endswith("\r\x1b[K")
    assert progress.seconds > 0


def test_no_live_line_unless_asked() -> None:
    stream = io.StringIO()
    with Progress("kv-0: backing up", live=False, stream=stream) as progress:
        pass
    assert stream.getvalue() == "" and progress.seconds >= 0


def test_rate_gives_bytes_and_megabytes_per_second() -> None:
    assert rate(30_000_000, 2.0) == "30.0 MB in 2.0 s (15.0 MB/s)"

"""A real Prometheus for the tests: Debian's ``prometheus`` binary on a free loopback port, scraping
static targets every second, with its TSDB in a temporary directory, queried over its HTTP API.
(The operator it scrapes is ``tests.chart.live.running_operator``.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvnode.testing.processes import free_port, wait_for

BINARY = shutil.which("prometheus")


@dataclass
class Target:
    """One scrape target: ``address`` (host:port, path /metrics) and the labels it gets."""

    job: str
    address: str
    labels: dict[str, str] = field(default_factory=dict)
    honor_labels: bool = False  # the operator's ServiceMonitor sets honorLabels: its series carry store


def config(targets: Sequence[Target], interval: str = "1s") -> dict[str, Any]:
    jobs: dict[str, dict[str, Any]] = {}
    for target in targets:
        job = jobs.setdefault(
            target.job,
            {
                "job_name": target.job,
                "honor_labels": target.honor_labels,
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "metrics_path": "/metrics",
                "static_configs": [],
            },
        )
        job["static_configs"].append({"targets": [target.address], "labels": dict(target.labels)})
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": list(jobs.values()),
    }


class QueryError(AssertionError):
    pass


class Prometheus:
    """A ``prometheus`` process; :meth:`close` (or the context manager) always ends it."""

    def __init__(self, root: Path, targets: Sequence[Target], binary: str | None = BINARY) -> None:
        if binary is None:
            raise RuntimeError("prometheus is not installed")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.address = f"127.0.0.1:{free_port()}"
        self.config_path = root / "prometheus.yml"
        # JSON is YAML: no hand-written YAML to get wrong.
        self.config_path.write_text(json.dumps(config(targets), indent=2))
        self.log_path = root / "prometheus.log"
        self.targets = list(targets)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address={self.address}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(self._ready, 30, "Prometheus to be ready", interval=0.1)
        except BaseException:
            self.close()
            raise

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=2) as response:
                return int(response.status) == 200
        except OSError:
            return False

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET /api/v1/<path>; returns the parsed body (``status`` is "success" or "error").
        Prometheus answers a bad query with 400 and a JSON body, which is returned too."""
        url = f"http://{self.address}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return json.loads(body)
            except ValueError:
                raise QueryError(f"{url}: HTTP {exc.code}: {body[:500]!r}") from None

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result; raises :class:`QueryError` if Prometheus refuses it."""
        body = self.api("query", {"query": expr})
        if body.get("status") != "success":
            raise QueryError(f"{expr!r}: {body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def active_targets(self) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self.api("targets", {"state": "active"})["data"]["activeTargets"]
        return targets

    def wait_scraped(self, since: float, scrapes: int = 3, timeout: float = 30.0) -> None:
        """Wait until every target is up and has been scraped ``scrapes`` times since ``since``
        (a time.time()), read from the per-target ``up`` series."""

        def scraped() -> bool:
            targets = self.active_targets()
            if len(targets) != len(self.targets) or any(t["health"] != "up" for t in targets):
                return False
            window = max(1, int(time.time() - since))
            counts = self.query(f"count_over_time(up[{window}s])")
            return len(counts) == len(self.targets) and all(float(c["value"][1]) >= scrapes for c in counts)

        try:
            wait_for(scraped, timeout, f"{scrapes} scrapes of every target", interval=0.25)
        except TimeoutError as exc:
            health = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in self.active_targets()]
            raise TimeoutError(f"{exc}\ntargets: {health}\n{self.log_tail()}") from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

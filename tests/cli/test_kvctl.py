"""kvctl as a user runs it: a subprocess, its stdout, stderr and exit code."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from kvnode.client import KVClient
from kvnode.testing.processes import ProcessCluster, free_port


def kvctl(
    *args: str, endpoints: list[str] | None = None, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KVCTL_")}
    if endpoints is not None:
        environment["KVCTL_ENDPOINTS"] = ",".join(endpoints)
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "kvnode.cli.kvctl", *args],
        input=stdin,
        capture_output=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    return result


@pytest.fixture
def endpoints(shared_cluster3: ProcessCluster) -> list[str]:
    return shared_cluster3.endpoints


def test_put_get_delete(endpoints: list[str], keyspace: str) -> None:
    key = keyspace + "greeting"
    put = kvctl("put", key, "hello wörld", endpoints=endpoints)
    assert (put.returncode, put.stdout) == (0, b"OK\n")
    got = kvctl("get", key, endpoints=endpoints)
    # Raw bytes, no newline added when stdout is not a terminal.
    assert (got.returncode, got.stdout) == (0, "hello wörld".encode())
    gone = kvctl("delete", key, endpoints=endpoints)
    assert (gone.returncode, gone.stdout) == (0, b"OK\n")
    again = kvctl("delete", key, "--output", "json", endpoints=endpoints)
    assert again.returncode == 0 and json.loads(again.stdout)["existed"] is False


def test_missing_key_exits_1(endpoints: list[str], keyspace: str) -> None:
    result = kvctl("get", keyspace + "nope", endpoints=endpoints)
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode() == f"kvctl: key not found: {keyspace}nope\n"


def test_value_from_stdin_is_binary_safe(endpoints: list[str], keyspace: str) -> None:
    value = bytes(range(256)) * 4
    assert kvctl("put", keyspace + "bin", "-", endpoints=endpoints, stdin=value).returncode == 0
    assert kvctl("get", keyspace + "bin", endpoints=endpoints).stdout == value
    shown = json.loads(kvctl("get", keyspace + "bin", "-o", "json", endpoints=endpoints).stdout)
    assert shown["value_encoding"] == "base64" and base64.b64decode(shown["value"]) == value
    assert shown["key"] == keyspace + "bin" and shown["key_encoding"] == "utf-8"
    assert {"hlc", "node_id"} <= set(shown["version"])


def test_list(endpoints: list[str], keyspace: str) -> None:
    keys = [f"{keyspace}l/{i}" for i in range(5)]
    with KVClient(endpoints) as kv:
        kv.batch_write({k: f"v{i}" for i, k in enumerate(keys)})
    listed = kvctl("list", "--prefix", keyspace + "l/", endpoints=endpoints)
    assert listed.returncode == 0 and listed.stdout.decode().splitlines() == keys
    values = kvctl("list", "--prefix", keyspace + "l/", "--values", "--limit", "2", endpoints=endpoints)
    assert values.stdout.decode().splitlines() == [f"{keys[0]}\tv0", f"{keys[1]}\tv1"]
    ranged = kvctl("list", "--start", keys[1], "--end", keys[3], endpoints=endpoints)
    assert ranged.stdout.decode().splitlines() == keys[1:3]
    as_json = json.loads(
        kvctl(
            "list", "--prefix", keyspace + "l/", "--values", endpoints=endpoints, env={"KVCTL_OUTPUT": "json"}
        ).stdout
    )
    assert as_json["count"] == 5
    assert [(e["key"], e["value"], e["value_encoding"]) for e in as_json["entries"]] == [
        (k, f"v{i}", "utf-8") for i, k in enumerate(keys)
    ]


def test_status(shared_cluster3: ProcessCluster, endpoints: list[str]) -> None:
    text = kvctl("status", endpoints=endpoints)
    assert text.returncode == 0
    lines = text.stdout.decode().splitlines()
    assert lines[0].split()[:3] == ["ENDPOINT", "NODE", "EPOCH"]
    assert [line.split()[1] for line in lines[1:]] == [n.node_id for n in shared_cluster3.nodes]
    report = json.loads(kvctl("status", "--output", "json", endpoints=endpoints).stdout)
    assert [e["node_id"] for e in report["endpoints"]] == [n.node_id for n in shared_cluster3.nodes]
    assert all(e["ok"] and e["partitions"] == 64 and len(e["peers"]) == 2 for e in report["endpoints"])


def test_status_with_one_endpoint_down_still_shows_the_others(endpoints: list[str]) -> None:
    dead = f"127.0.0.1:{free_port()}"
    result = kvctl("status", "--timeout", "1s", endpoints=[endpoints[0], dead])
    assert result.returncode == 3
    assert "unreachable" in result.stdout.decode() and "kv-0" in result.stdout.decode()
    assert f"kvctl: {dead}: cannot reach {dead}" in result.stderr.decode()


def test_bench(endpoints: list[str], keyspace: str) -> None:
    result = kvctl(
        "bench", "--ops", "300", "--concurrency", "16", "--keys", "50", "--value-size", "64",
        "--key-prefix", keyspace, "--output", "json", endpoints=endpoints,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["ops"] == 300 and report["errors"] == 0
    assert report["read"]["ops"] + report["write"]["ops"] == 300
    assert report["read"]["ops"] > 0 and report["write"]["ops"] > 0
    assert 0 < report["write"]["p50_ms"] <= report["write"]["p99_ms"]
    assert "100%" in result.stderr.decode()  # the progress bar
    batches = report["coalesced"]  # 16 tasks on one client: their calls share RPCs
    assert batches["calls"] == 300 and 0 < batches["rpcs"] < 300

    alone = kvctl(
        "--no-coalesce", "bench", "--ops", "50", "--key-prefix", keyspace, "-o", "json", endpoints=endpoints
    )
    assert alone.returncode == 0 and json.loads(alone.stdout)["coalesced"] is None
    from_env = kvctl(
        "bench", "--ops", "50", "--key-prefix", keyspace, "-o", "json",
        endpoints=endpoints, env={"KVCTL_NO_COALESCE": "1"},
    )  # fmt: skip
    assert from_env.returncode == 0 and json.loads(from_env.stdout)["coalesced"] is None

    text = kvctl(
        "bench", "--duration", "1s", "--concurrency", "4", "--key-prefix", keyspace, endpoints=endpoints
    )
    assert text.returncode == 0
    table = text.stdout.decode().splitlines()
    assert table[1].split() == ["OP", "OPS", "ERRORS", "OPS/S", "P50", "MS", "P99", "MS"]
    assert [line.split()[0] for line in table[2:5]] == ["read", "write", "total"]
    assert "RPCs" in table[5]


def test_global_flags_after_the_command_and_from_the_environment(endpoints: list[str], keyspace: str) -> None:
    key = keyspace + "g"
    assert kvctl("put", key, "v", "--endpoints", ",".join(endpoints), "--consistency", "ALL").returncode == 0
    result = kvctl("get", key, "--timeout", "2s", endpoints=endpoints, env={"KVCTL_CONSISTENCY": "one"})
    assert result.stdout == b"v"
    bad = kvctl("get", key, endpoints=endpoints, env={"KVCTL_CONSISTENCY": "most"})
    assert bad.returncode == 2 and "KVCTL_CONSISTENCY" in bad.stderr.decode()


def test_usage_errors_exit_2(endpoints: list[str]) -> None:
    unknown = kvctl("get", "k", "--bogus", endpoints=endpoints)
    assert unknown.returncode == 2
    assert "usage: kvctl" in unknown.stderr.decode() and "--bogus" in unknown.stderr.decode()
    assert kvctl(endpoints=endpoints).returncode == 2
    assert kvctl("put", "only-a-key", endpoints=endpoints).returncode == 2
    assert kvctl("get", "k", "--consistency", "SOME", endpoints=endpoints).returncode == 2
    assert kvctl("get", "k", "--endpoints", "no-port", endpoints=endpoints).returncode == 2
    empty = kvctl("put", "", "v", endpoints=endpoints)
    assert empty.returncode == 2
    assert empty.stderr.decode() == "kvctl: invalid request: key must not be empty\n"
    helped = kvctl("--help")
    assert helped.returncode == 0
    assert all(name in helped.stdout.decode() for name in ("put", "get", "delete", "list", "status", "bench"))


def test_unreachable_endpoint_exits_3_with_one_line() -> None:
    dead = f"127.0.0.1:{free_port()}"
    result = kvctl("get", "k", "--endpoints", dead)
    assert result.returncode == 3
    assert result.stderr.decode() == f"kvctl: request failed: cannot reach {dead}: connection refused\n"

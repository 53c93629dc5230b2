"""The kind cluster that every real-cluster test shares (test_kind.py: chaos; test_kind_operator.py:
the operator's checks): made and installed once per session by e2e/kind/up.sh.

Where docker (with its daemon), kind, kubectl or helm is missing, every test that needs the cluster
is skipped with a message naming exactly what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from e2e.kind import k8s


@pytest.fixture(scope="session")
def cluster() -> Iterator[str]:
    """The kubectl context of the cluster (``kind-<name>``)."""
    missing = k8s.missing_tools()
    if missing:
        pytest.skip("kind suite skipped: missing " + ", ".join(missing))
    name = os.environ.get("KIND_CLUSTER_NAME", "kvstore-e2e")
    existed = name in k8s.run(["kind", "get", "clusters"], check=False).stdout.split()
    env = {**os.environ, "KIND_CLUSTER_NAME": name, "PYTHON": sys.executable}
    up = subprocess.run(
        ["bash", str(k8s.KIND_DIR / "up.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    if up.returncode != 0:
        pytest.fail(f"e2e/kind/up.sh failed ({up.returncode}):\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}")
    try:
        yield f"kind-{name}"
    finally:
        if not existed and not os.environ.get("KVSTORE_KIND_KEEP"):
            k8s.run(["kind", "delete", "cluster", "--name", name], check=False, timeout=300)

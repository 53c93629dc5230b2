"""The container image, built for real and smoke-tested (e2e/image/build_and_test.py), and the
operator run from it the way the chart's Deployment runs it.

Runs wherever a docker daemon answers and a base image can be had (an existing
``kvstore-base:bookworm``, or debootstrap as root to make one); elsewhere it is skipped with the
reason. A cold run (debootstrap, pip downloads) takes 70-120 s, a warm one 5-20 s;
``pytest -m 'not image'`` leaves it out.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

from e2e.image import build_and_test as image

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]


def base_image() -> str | None:
    return os.environ.get("KVSTORE_BASE_IMAGE") or None


def test_image_builds_and_serves_put_get() -> None:
    missing = image.problems(base_image=base_image())
    if missing:
        pytest.skip("image build skipped: " + "; ".join(missing))
    command = [sys.executable, "-m", "e2e.image.build_and_test"]
    if base_image():
        command += ["--base-image", str(base_image())]
    result = subprocess.run(
        command, cwd=image.REPO, capture_output=True, text=True, timeout=1700, check=False
    )
    # The script's log (phases, timings, container output) is the evidence either way.
    sys.stderr.write(result.stderr)
    assert result.returncode == 0, (
        f"image build or smoke test failed (exit {result.returncode}):\n" + (result.stderr[-8000:])
    )


def test_operator_runs_from_the_image_as_the_chart_runs_it(tmp_path: Path) -> None:
    """``kvstore-operator`` in the image, with the Deployment's settings and lock-down: uid 10001, a
    read-only root with a tmpfs /tmp, no capabilities. Against kmock it must reconcile a KVStore
    and answer its liveness endpoint."""
    problem = image.docker_problem()
    if problem:
        pytest.skip("image test skipped: " + problem)
    if not image.image_exists(image.DEFAULT_TAG):
        pytest.skip(f"no {image.DEFAULT_TAG} image (test_image_builds_and_serves_put_get builds it)")
    from tests.chart import live
    from tests.chart.helpers import render

    deployment = render({}).one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    name = f"{image.CONTAINER_PREFIX}operator-{secrets.token_hex(3)}"

    def launch(settings: dict[str, str], kubeconfig: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
        args = ["docker", "run", "--rm", "--name", name, "--network", "host",
                "--read-only", "--tmpfs", "/tmp:size=16m", "--user", user,
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "--volume", f"{kubeconfig}:/etc/kvstore/kubeconfig:ro",
                "--env", "KUBECONFIG=/etc/kvstore/kubeconfig"]  # fmt: skip
        for key, value in settings.items():
            args += ["--env", f"{key}={value}"]
        args += [image.DEFAULT_TAG, *container["command"], *container.get("args", [])]
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    try:
        exported, liveness = live.operator_metrics(tmp_path, container["env"], launch)
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)
    assert liveness == 200
    assert "kvstore_operator_reconciles_total" in exported.labels

"""Fixtures for the chart tests: rendering with Helm's own library, and live metric scrapes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.chart import live
from tests.chart.helpers import CHART, Rendered, render


@pytest.fixture(scope="session")
def default_render() -> Rendered:
    return render({})


@pytest.fixture(scope="session")
def node_exports(tmp_path_factory: pytest.TempPathFactory) -> live.Exported:
    return live.node_metrics(tmp_path_factory.mktemp("dash-nodes"))


@pytest.fixture(scope="session")
def operator_run(
    tmp_path_factory: pytest.TempPathFactory, default_render: Rendered
) -> tuple[live.Exported, int]:
    deployment = default_render.one("Deployment")
    env: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return live.operator_metrics(tmp_path_factory.mktemp("dash-operator"), env)


@pytest.fixture(scope="session")
def exported(node_exports: live.Exported, operator_run: tuple[live.Exported, int]) -> live.Exported:
    """Everything a node or the operator exports."""
    return node_exports.merge(operator_run[0])


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    """A copy of the chart that a test may change."""
    target = tmp_path / "kvstore"
    shutil.copytree(CHART, target)
    return target

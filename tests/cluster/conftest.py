from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvnode.testing.processes import ProcessCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    """Three real kvnode processes, RF=3."""
    with ProcessCluster(tmp_path, size=3, partitions=64) as c:
        c.start()
        yield c

"""Failpoints: faults that tests switch on at named points of the code, as etcd does with gofail.

They are set only by the environment, ``KVNODE_FAILPOINTS="name=value;name=value"``, read once when
a module asks for its failpoint at import. A failpoint that is not set is ``None`` in its module, so
the code at the point costs one test of a module constant, and nothing else, in every real run.

Failpoints (each is documented where it is used):

- ``ack-before-replication=DURATION``: a deliberately broken build for the chaos suite. The
  coordinator acknowledges a write at once and replicates it DURATION later, so a node killed in
  between loses acknowledged writes (``kvnode.cluster.coordinator``).
- ``backup-upload-delay=DURATION``: a backup to a bucket pauses DURATION after each block it
  uploads, so that a test can kill the node in the middle of an upload (``kvnode.backup.buckets``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from kvnode.core.units import parse_duration

ENV = "KVNODE_FAILPOINTS"
KNOWN = frozenset({"ack-before-replication", "backup-upload-delay"})

log = logging.getLogger(__name__)


def parse(value: str) -> dict[str, str]:
    """``"a=1s;b=x"`` -> ``{"a": "1s", "b": "x"}``; an unknown name is refused, not ignored."""
    points: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(";"))):
        name, _, setting = item.partition("=")
        name = name.strip()
        if name not in KNOWN:
            raise ValueError(f"{ENV}: unknown failpoint {name!r}; known: {', '.join(sorted(KNOWN))}")
        points[name] = setting.strip()
    return points


def enabled(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every failpoint set in the environment, by name."""
    return parse((os.environ if environ is None else environ).get(ENV, ""))


def duration(name: str, environ: Mapping[str, str] | None = None) -> float | None:
    """The failpoint's value as a duration in seconds, or None when it is not set."""
    value = enabled(environ).get(name)
    if value is None:
        return None
    log.warning("TEST-ONLY failpoint %s=%s is set: this process is deliberately broken", name, value)
    return parse_duration(value)

"""Kubernetes Events on the custom resources, for every meaningful action."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf

log = logging.getLogger("kvoperator.events")

Poster = Callable[[Mapping[str, Any], str, str, str], None]


def kopf_poster(body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    """Post through kopf's event queue (outside an operator, e.g. in a test, only log)."""
    meta = body.get("metadata", {})
    log.log(
        logging.WARNING if kind == "Warning" else logging.INFO,
        "%s/%s: %s: %s",
        meta.get("namespace"),
        meta.get("name"),
        reason,
        message,
    )
    with contextlib.suppress(LookupError):  # no operator context (a step run directly)
        kopf.event(dict(body), type=kind, reason=reason, message=message)  # type: ignore[arg-type]


class Events:
    """Posts Normal and Warning Events about a CR (through kopf; a test passes its own poster)."""

    def __init__(self, poster: Poster = kopf_poster) -> None:
        self._poster = poster

    def normal(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        self._poster(body, "Normal", reason, message)

    def warning(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        self._poster(body, "Warning", reason, message)

"""The channels the chaos tools open to nodes, with the credentials of the scenario that runs them:
plaintext by default, TLS and an admin certificate for a cluster that serves them. A context
variable, so that every task a scenario starts (workload sessions, convergence checks) inherits it
without each helper taking it as an argument."""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import grpc

from kvnode.client import Credentials

CREDENTIALS: ContextVar[Credentials | None] = ContextVar("chaos_credentials", default=None)


def open_channel(endpoint: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    return (CREDENTIALS.get() or Credentials()).channel(endpoint, list(options))

"""The addresses a client may send to, and which of them to try first.

Any node coordinates any request, so calls that are not routed to a replica go round-robin over the
configured endpoints to spread the load. An address that could not be connected to goes to the back
of the line for a while: a dead node, or a pod name that does not resolve from where the client
runs, then costs one failed connect instead of one on every call.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence

from kvnode.core.names import parse_host_port


def parse_endpoints(endpoints: str | Iterable[str]) -> tuple[str, ...]:
    """``"a:1,b:2"`` or ``["a:1", "b:2"]`` → ``("a:1", "b:2")``, checked and without duplicates."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    parsed: list[str] = []
    for item in items:
        address = item.strip()
        if not address:
            continue
        parse_host_port(address, what="endpoint")
        if address not in parsed:
            parsed.append(address)
    if not parsed:
        raise ValueError("no endpoints given: pass at least one HOST:PORT")
    return tuple(parsed)


class Endpoints:
    """Configured endpoints in the order to try them, with a memory of unreachable addresses."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        unreachable_for: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.addresses = tuple(addresses)
        self.unreachable_for = unreachable_for
        self._clock = clock
        self._until: dict[str, float] = {}
        self._turn = itertools.count()

    def mark_unreachable(self, address: str) -> None:
        self._until[address] = self._clock() + self.unreachable_for

    def reachable(self, address: str) -> bool:
        until = self._until.get(address)
        if until is None:
            return True
        if until <= self._clock():
            del self._until[address]
            return True
        return False

    def order(self) -> list[str]:
        """Every endpoint once, starting at the next in turn; the unreachable ones last (they are
        still tried when nothing else answers)."""
        start = next(self._turn) % len(self.addresses)
        rotated = self.addresses[start:] + self.addresses[:start]
        good = [a for a in rotated if self.reachable(a)]
        return good + [a for a in rotated if a not in good]

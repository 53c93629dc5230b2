"""Network namespaces for real partitions (needs root and ``ip``; ``nft`` is used when installed).

Layout for one run (``<id>`` = this process's pid and a random tag)::

    root namespace (the test, the clients)        kvchaos-<id>-hub             kvchaos-<id>-n<i>
    kvc<tag> 10.213.S.1/24  <-- veth -->  up ---+-- br0 (bridge) --+-- n<i> <-- veth --> eth0 10.213.S.(10+i)

Every node runs in its own namespace and listens on its own address; the clients stay in the root
namespace and reach every node through the bridge. :meth:`NetnsLab.isolate` cuts one node off from
its peers (not from the clients): with ``nft``, input rules in both namespaces silently drop the
packets between them, so calls hang as in a real partition; without it, blackhole routes do the same
for the replies (connections hang) and fail the node's own sends at once.

Everything is torn down by :meth:`NetnsLab.close` (deleting a namespace deletes its veth pairs), and
:func:`cleanup_stale` removes what an earlier, crashed run left behind (namespaces whose creator
process is gone).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Sequence

PREFIX = "kvchaos-"
BASE = ipaddress.IPv4Network("10.213.0.0/16")
NODE_PORT = 7000
_STALE = re.compile(rf"^{PREFIX}(\d+)-[0-9a-f]+-\w+$")


class NetnsUnavailable(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def _in(ns: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *command], check=check, capture_output=True, text=True, timeout=30
    )


def available() -> tuple[bool, str]:
    """Whether namespaces can be used here, and if not, why."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    if shutil.which("ip") is None:
        return False, "the 'ip' command (iproute2) is not installed"
    probe = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:6]}-probe"
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return False, f"cannot create a network namespace: {result.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return True, ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete namespaces of this suite whose creating process no longer runs."""
    removed = []
    listing = _ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _STALE.match(name)
        if match and not _alive(int(match[1])):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


def _free_subnet() -> ipaddress.IPv4Network:
    used = _ip("-4", "-o", "addr", check=False).stdout
    for subnet in BASE.subnets(new_prefix=24):
        if subnet.network_address.packed[2] == 0:
            continue
        if str(subnet.network_address)[:-1] not in used:
            return subnet
    raise NetnsUnavailable("no free /24 left in 10.213.0.0/16")


class NetnsLab:
    """``size`` node namespaces on one bridge, reachable from the root namespace."""

    def __init__(self, size: int) -> None:
        ok, why = available()
        if not ok:
            raise NetnsUnavailable(why)
        cleanup_stale()
        tag = uuid.uuid4().hex[:6]
        self.id = f"{os.getpid()}-{tag}"
        self.hub = f"{PREFIX}{self.id}-hub"
        self.nodes = [f"{PREFIX}{self.id}-n{i}" for i in range(size)]
        self.root_link = f"kvc{tag}"
        self.subnet = _free_subnet()
        hosts = list(self.subnet.hosts())
        self.client_ip = str(hosts[0])
        self.node_ips = [str(hosts[9 + i]) for i in range(size)]
        self.method = "nft" if shutil.which("nft") else "route"
        self._isolated: list[tuple[int, int]] = []
        self._created: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        prefix = self.subnet.prefixlen
        _ip("netns", "add", self.hub)
        self._created.append(self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        _ip("link", "add", self.root_link, "type", "veth", "peer", "name", "uplink", "netns", self.hub)
        _ip("-n", self.hub, "link", "set", "dev", "uplink", "master", "br0", "up")
        _ip("addr", "add", f"{self.client_ip}/{prefix}", "dev", self.root_link)
        _ip("link", "set", self.root_link, "up")
        for i, ns in enumerate(self.nodes):
            _ip("netns", "add", ns)
            self._created.append(ns)
            _ip(
                "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"n{i}", "netns", self.hub
            )
            _ip("-n", self.hub, "link", "set", f"n{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.node_ips[i]}/{prefix}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def address(self, i: int) -> str:
        return f"{self.node_ips[i]}:{NODE_PORT}"

    # -- partitions -------------------------------------------------------------------------------

    def _cut(self, a: int, b: int) -> None:
        """Drop what ``a`` receives from ``b``."""
        ns, peer = self.nodes[a], self.node_ips[b]
        if self.method == "nft":
            _in(ns, "nft", "add", "table", "inet", "kvchaos", check=False)
            _in(
                ns, "nft", "add", "chain", "inet", "kvchaos", "input",
                "{ type filter hook input priority 0; policy accept; }",
            )  # fmt: skip
            _in(ns, "nft", "add", "rule", "inet", "kvchaos", "input", "ip", "saddr", peer, "drop")
        else:
            _ip("-n", ns, "route", "add", "blackhole", f"{peer}/32")

    def isolate(self, node: int, others: Sequence[int] | None = None) -> None:
        """Cut ``node`` off from ``others`` (default: every other node), both ways. Clients can still
        reach every node."""
        for other in others if others is not None else range(len(self.nodes)):
            if other == node:
                continue
            self._cut(node, other)
            self._cut(other, node)
            self._isolated += [(node, other), (other, node)]

    def heal(self) -> None:
        for ns in self.nodes:
            if self.method == "nft":
                _in(ns, "nft", "delete", "table", "inet", "kvchaos", check=False)
        if self.method == "route":
            for a, b in self._isolated:
                _ip("-n", self.nodes[a], "route", "del", "blackhole", f"{self.node_ips[b]}/32", check=False)
        self._isolated.clear()

    def close(self) -> None:
        """Delete every namespace this lab made (their veths, and the root end, go with them)."""
        for ns in reversed(self._created):
            _ip("netns", "del", ns, check=False)
        self._created.clear()
        with contextlib.suppress(Exception):
            _ip("link", "del", self.root_link, check=False)

    def __enter__(self) -> NetnsLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

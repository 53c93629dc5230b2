"""The ``kvstore-operator`` command: ``kopf run`` with this project's handlers and settings.

    kvstore-operator                      # every namespace (needs cluster-wide RBAC)
    kvstore-operator --namespace shop     # only these namespaces (repeatable)

Settings come from ``KVSTORE_OPERATOR_*`` variables (docs/operator.md); flags override a few.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
import urllib.parse

import aiohttp.web
import kopf

from kvoperator import __version__
from kvoperator.config import OperatorConfig, env_names
from kvoperator.kube import KubeClient, login
from kvoperator.leader import LeaderElector, lease_namespace, run_as_leader

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvstore-operator",
        description="Run the kvstore operator (KVStore and KVBackup resources).",
        epilog="Environment: " + ", ".join(env_names()),
    )
    parser.add_argument("--version", action="version", version=f"kvstore-operator {__version__}")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="serve this namespace (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace (default)")
    parser.add_argument("--liveness", default=None, help="liveness endpoint URL (default from the settings)")
    parser.add_argument("--peering", default=None, help="kopf peering name (default: standalone)")
    parser.add_argument("--verbose", action="store_true", help="log more")
    parser.add_argument("--debug", action="store_true", help="log everything, kopf's internals too")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = OperatorConfig.from_env()
    except ValueError as exc:
        print(f"kvstore-operator: error: {exc}", file=sys.stderr)
        return 2
    changes: dict[str, object] = {}
    if args.namespace:
        changes["namespaces"] = tuple(args.namespace)
    elif args.all_namespaces:
        changes["namespaces"] = ()
    if args.liveness is not None:
        changes["liveness"] = args.liveness
    if args.peering is not None:
        changes["peering"] = args.peering
    config = config.with_overrides(**changes)
    level = logging.DEBUG if args.debug else logging.INFO
    kopf.configure(debug=args.debug, verbose=args.verbose or args.debug)
    logging.getLogger().setLevel(level)
    import kvoperator.handlers  # noqa: F401 - registers the handlers

    try:
        led = asyncio.run(run(config))
    except KeyboardInterrupt:
        return 130
    return 0 if led else 1


async def serve_standby_liveness(url: str) -> aiohttp.web.AppRunner | None:
    """While a replica stands by, kopf is not running, so nothing would answer the liveness probe
    and the kubelet would restart the standby over and over: answer it here until kopf starts."""
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    app = aiohttp.web.Application()

    async def alive(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"standby": True})

    app.router.add_get(parts.path or "/", alive)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, parts.hostname, parts.port or 80, reuse_address=True).start()
    return runner


async def run(config: OperatorConfig) -> bool:
    """kopf's operator, run while this replica leads (when leader election is on); False if it
    lost the lead (the process exits non-zero, and Kubernetes restarts it as a standby)."""
    stop = threading.Event()
    namespace = lease_namespace(config)
    standby = await serve_standby_liveness(config.liveness) if namespace else None

    async def operate(stop_flag: threading.Event) -> None:
        nonlocal standby
        if standby is not None:
            await standby.cleanup()  # kopf serves the liveness endpoint from now on
            standby = None
        await kopf.operator(
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            liveness_endpoint=config.liveness or None,
            standalone=not config.peering,
            memo=kopf.Memo(config=config),
            stop_flag=stop_flag,
        )

    if namespace is None:
        if config.leader_election:
            log.warning(
                "no leader election: not in a pod and no KVSTORE_OPERATOR_LEADER_ELECTION_NAMESPACE; "
                "run only one operator for these namespaces"
            )
        await operate(stop)
        return True
    client = KubeClient(login(), timeout=config.connect_timeout)
    log.info("leader election on the Lease %s/%s", namespace, config.lease_name)
    try:
        return await run_as_leader(LeaderElector.from_config(client, config, namespace), operate, stop)
    finally:
        await client.close()
        if standby is not None:
            await standby.cleanup()


if __name__ == "__main__":
    sys.exit(main())

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

import kopf

from kvoperator import __version__
from kvoperator.config import OperatorConfig, env_names


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
        asyncio.run(
            kopf.operator(
                clusterwide=not config.namespaces,
                namespaces=list(config.namespaces),
                liveness_endpoint=config.liveness or None,
                standalone=not config.peering,
                memo=kopf.Memo(config=config),
            )
        )
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

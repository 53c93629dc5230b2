"""The ``kvctl`` command: read, write, list and inspect a kvnode cluster.

    kvctl --endpoints 127.0.0.1:7000 put greeting hello
    kvctl get greeting
    kvctl list --prefix user/ --values --output json
    kvctl status
    kvctl bench --duration 10s --concurrency 64

Global flags may come before or after the subcommand, and can be set as ``KVCTL_<FLAG>`` in the
environment. Exit codes: 0 ok, 1 key not found, 2 usage error or invalid request, 3 the request
failed (server error, unavailable, timeout), 130 interrupted. See docs/kvctl.md.

A subcommand is one function registered with :func:`kvnode.cli.kvctl_core.command`; it gets the
parsed arguments and a :class:`~kvnode.cli.kvctl_core.Session` and returns the exit code. The
cluster-administration subcommands (member, backup, restore) live in ``kvctl_admin``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from kvnode import __version__
from kvnode.cli import kvctl_output as out
from kvnode.cli.kvctl_core import (
    COMMANDS,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    Session,
    command,
)
from kvnode.cli.options import EnvArgs, typed
from kvnode.client import FailedPrecondition, InvalidArgument, KVError, Level
from kvnode.client.endpoints import parse_endpoints
from kvnode.core.units import parse_duration


def _utf8(value: str) -> bytes:
    return value.encode("utf-8", errors="surrogateescape")


def _timeout(value: str) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"timeout must be positive, not {value!r}")
    return seconds


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"{value} must not be negative")
    return number


# -- subcommands -------------------------------------------------------------------------------


def _put_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", type=_utf8, help="the key (UTF-8)")
    parser.add_argument("value", help="the value; '-' reads it from stdin, byte for byte")


@command("put", "store a value", _put_args)
def put(args: argparse.Namespace, session: Session) -> int:
    value = sys.stdin.buffer.read() if args.value == "-" else _utf8(args.value)
    result = session.client.put(args.key, value)
    if session.json:
        out.emit_json({**out.bytes_json("key", args.key), "version": out.version_json(result.version)})
    else:
        out.emit_line("OK")
    return EXIT_OK


def _key_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", type=_utf8, help="the key (UTF-8)")


@command("get", "print a value (raw bytes; JSON with --output json)", _key_arg)
def get(args: argparse.Namespace, session: Session) -> int:
    entry = session.client.get(args.key)
    if entry is None:
        out.error(f"key not found: {out.printable(args.key)}")
        return EXIT_NOT_FOUND
    if session.json:
        out.emit_json(out.entry_json(entry))
    else:
        out.emit_raw(entry.value)
    return EXIT_OK


@command("delete", "delete a key (deleting a missing key succeeds)", _key_arg)
def delete(args: argparse.Namespace, session: Session) -> int:
    result = session.client.delete(args.key, return_previous=True)
    if session.json:
        out.emit_json(
            {
                **out.bytes_json("key", args.key),
                "existed": result.previous is not None,
                "version": out.version_json(result.version),
            }
        )
    else:
        out.emit_line("OK" if result.previous is not None else "OK (key did not exist)")
    return EXIT_OK


def _list_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", type=_utf8, default=b"", help="only keys starting with this")
    parser.add_argument("--start", type=_utf8, default=b"", help="first key (inclusive)")
    parser.add_argument("--end", type=_utf8, default=b"", help="stop before this key (exclusive)")
    parser.add_argument("--limit", type=typed(_non_negative), default=0, help="most keys to list (0: all)")
    parser.add_argument("--values", action="store_true", help="print values too (key TAB value in text)")


@command("list", "list keys in byte order", _list_args)
def list_keys(args: argparse.Namespace, session: Session) -> int:
    entries = session.client.scan(
        args.start, args.end, args.prefix, limit=args.limit or None, keys_only=not args.values
    )
    if not session.json:
        for entry in entries:
            line = out.printable(entry.key)
            out.emit_line(f"{line}\t{out.printable(entry.value)}" if args.values else line)
        return EXIT_OK
    count = 0
    sys.stdout.write('{"entries": [')
    for entry in entries:
        sys.stdout.write((", " if count else "") + out.json_text(out.entry_json(entry, value=args.values)))
        count += 1
    sys.stdout.write(f'], "count": {count}}}\n')
    return EXIT_OK


@command("status", "each endpoint's node status as a table")
def status(args: argparse.Namespace, session: Session) -> int:
    reports = session.client.admin.status_all()
    failed = [r for r in reports if r.error is not None]
    if session.json:
        out.emit_json({"endpoints": [out.status_json(r) for r in reports]})
    else:
        out.emit_line(out.status_table(reports))
    for report in failed:
        out.error(f"{report.address}: {report.error}")
    return EXIT_FAILED if failed else EXIT_OK


def _bench_args(parser: argparse.ArgumentParser) -> None:
    from kvnode.cli.kvctl_bench import add_arguments

    add_arguments(parser)


@command("bench", "load the cluster with concurrent gets and puts; report ops/s and latency", _bench_args)
def bench(args: argparse.Namespace, session: Session) -> int:
    from kvnode.cli.kvctl_bench import run

    return EXIT_OK if run(args, session) else EXIT_FAILED


# The cluster-administration subcommands register themselves after the data ones, in help order.
from kvnode.cli import kvctl_admin  # noqa: E402, F401

# -- parsing and running -----------------------------------------------------------------------


def _global_flags() -> list[tuple[str, dict[str, Any]]]:
    """The flags every subcommand shares."""
    return [
        (
            "--endpoints",
            {
                "type": typed(parse_endpoints),
                "default": parse_endpoints("127.0.0.1:7000"),
                "show": ",".join,
                "help": "comma-separated HOST:PORT list of nodes",
            },
        ),
        (
            "--timeout",
            {"type": typed(_timeout), "default": 5.0, "help": "per-request timeout, e.g. 2s or 500ms"},
        ),
        (
            "--consistency",
            {
                "type": typed(Level.parse),
                "default": None,
                "help": "ONE, QUORUM, ALL or LINEARIZABLE (default: the node's default)",
            },
        ),
        ("--output", {"choices": ("text", "json"), "default": "text", "help": "output format"}),
        ("--cacert", {"default": None, "help": "PEM CA bundle that signed the nodes' certificates (TLS)"}),
        ("--cert", {"default": None, "help": "PEM client certificate, for mutual TLS"}),
        ("--key", {"dest": "key_file", "metavar": "KEY", "default": None, "help": "PEM key of --cert"}),
        (
            "--token",
            {"default": None, "show": lambda _: "", "help": "bearer token (from the node's --token-file)"},
        ),
        (
            "--server-name",
            {"default": None, "help": "name to check the node's certificate for (default: the host dialled)"},
        ),
    ]


def _short_output(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "-o", dest="output", choices=("text", "json"), default=argparse.SUPPRESS, help="short for --output"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvctl",
        description="Talk to a kvnode cluster. Exit codes: 0 ok, 1 key not found, 2 usage error, "
        "3 request failed.",
    )
    parser.add_argument("--version", action="version", version=f"kvctl {__version__}")
    env = EnvArgs(parser, "KVCTL_")
    for flag, options in _global_flags():
        env.add(flag, **options)
    _short_output(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        sub = subparsers.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(sub)
        # The global flags again, so they may follow the command; given there, they win.
        group = sub.add_argument_group("global flags (may also come before the command)")
        for flag, options in _global_flags():
            options = {k: v for k, v in options.items() if k != "show"}
            group.add_argument(flag, **{**options, "default": argparse.SUPPRESS})
        _short_output(group)
        sub.set_defaults(run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        out.error("a command is required: " + ", ".join(COMMANDS))
        return EXIT_USAGE
    session = Session(args)
    try:
        code: int = args.run(args, session)
        sys.stdout.flush()
        return code
    except InvalidArgument as exc:
        out.error(f"invalid request: {exc.message}")
        return EXIT_USAGE
    except FailedPrecondition as exc:
        out.error(f"refused: {exc.message}")
        return EXIT_USAGE
    except KVError as exc:
        out.error(f"request failed: {exc.message}")
        return EXIT_FAILED
    except ValueError as exc:
        out.error(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``kvctl list | head``): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        session.close()


if __name__ == "__main__":
    sys.exit(main())

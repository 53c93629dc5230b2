"""What every kvctl subcommand shares: exit codes, the session, and the command registry."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from kvnode.client import Credentials, KVClient
from kvnode.client.aio import ClientOptions

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_INTERRUPTED = 130


class Session:
    """What a subcommand works with: the global options and a client made on first use."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json = args.output == "json"
        self._client: KVClient | None = None
        self._credentials: Credentials | None = None

    @property
    def endpoints(self) -> tuple[str, ...]:
        endpoints: tuple[str, ...] = self.args.endpoints
        return endpoints

    @property
    def credentials(self) -> Credentials:
        """--cacert, --cert, --key, --token (files read once, on first use)."""
        if self._credentials is None:
            a = self.args
            self._credentials = Credentials.from_files(a.cacert, a.cert, a.key_file, a.token, a.server_name)
        return self._credentials

    def client_options(self, *, route: bool) -> ClientOptions:
        return {
            "timeout": self.args.timeout,
            "consistency": self.args.consistency,
            "route": route,
            "credentials": self.credentials,
        }

    @property
    def client(self) -> KVClient:
        if self._client is None:
            # One command is a call or a few: learning the membership to route them costs more
            # than the hop it saves.
            self._client = KVClient(self.endpoints, **self.client_options(route=False))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


Run = Callable[[argparse.Namespace, Session], int]
Configure = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Configure
    run: Run


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Configure = lambda parser: None) -> Callable[[Run], Run]:
    """Register a subcommand: ``configure`` adds its arguments, the decorated function runs it."""

    def register(run: Run) -> Run:
        COMMANDS[name] = Command(name, help, configure, run)
        return run

    return register

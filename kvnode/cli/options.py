"""argparse helpers shared by ``kvnode`` and ``kvctl``: environment-variable defaults, typed parsers
that turn a ValueError into a clean usage error, and logging set-up."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def typed(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap a parser so argparse reports its ValueError message as the usage error."""

    def run(value: str) -> T:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    run.__name__ = getattr(parse, "__name__", "value")
    return run


class EnvArgs:
    """Adds flags whose default comes from ``<PREFIX><NAME>`` in the environment."""

    def __init__(self, parser: argparse.ArgumentParser, prefix: str) -> None:
        self.parser = parser
        self.prefix = prefix

    def add(
        self,
        flag: str,
        *,
        default: Any = None,
        help: str,
        show: Callable[[Any], str] = str,
        **kwargs: Any,
    ) -> None:
        """Add ``flag``; ``show`` writes its default for --help."""
        env = self.prefix + flag.lstrip("-").replace("-", "_").upper()
        value = os.environ.get(env)
        if value is not None:
            parse = kwargs.get("type")
            if kwargs.get("action") == "store_true":
                default = value.strip().lower() in ("1", "true", "yes", "on")
            else:
                try:
                    default = parse(value) if parse else value
                except argparse.ArgumentTypeError as exc:
                    self.parser.error(f"{env}: {exc}")
        text = "" if default is None else show(default)
        shown = f" (default: {text})" if text else ""
        self.parser.add_argument(flag, default=default, help=f"{help}{shown} [env {env}]", **kwargs)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


LOG_LEVELS = ("debug", "info", "warning", "error")

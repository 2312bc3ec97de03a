"""Conventions shared by the command-line tools of both sides (``auctioneer``, ``agent-client``).

A user mistake raises :class:`UsageError` and becomes one red line on stderr and exit status 2;
no traceback. Logging goes to stderr through rich.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler

stderr = Console(stderr=True)

EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake the user can fix; its message is the one line they will see."""


def describe_validation_error(exc: ValidationError) -> str:
    """``bids[0].distribution: probabilities sum to 0.9, ...`` for a pydantic error."""
    first = exc.errors(include_url=False, include_input=False)[0]
    path = ""
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = first["msg"].removeprefix("Value error, ")
    return f"{path}: {message}" if path else message


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's contents; :class:`UsageError` naming ``what`` it is if it cannot be read or parsed."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{what} {path} is not valid TOML: {exc}") from None


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity, 2)
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(console=stderr, show_path=False)], force=True
    )


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the chosen subcommand's ``run(args) -> int``."""
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "verbose", 0))
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except UsageError as exc:
        stderr.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        stderr.print("interrupted")
        return 130
    finally:
        sys.stdout.flush()

"""What every command shares: the consoles, logging, reading TOML files, endpoint flags, and one line
per user mistake.

A mistake the user can fix (any :class:`~protocol.errors.UserError`: a :class:`UsageError` of the
commands, or a library's) becomes one red line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from auctioneer.settings import DEFAULT_DB
from protocol.errors import UserError
from protocol.fields import AGENT_NAME_PATTERN, NAME_RULE
from protocol.sockets import DEFAULT_FEED_ENDPOINT, DEFAULT_MARKET_ENDPOINT, endpoint_problem

stdout = Console()
stderr = Console(stderr=True)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(UserError):
    """A mistake the user can fix; its message is the one line they will see."""


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's contents; :class:`UsageError` naming ``what`` it is if it cannot be read or parsed."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{what} {path} is not valid TOML: {exc}") from None


def endpoint(text: str) -> str:
    """The argparse type of every endpoint a command connects to: refused in one line if malformed."""
    problem = endpoint_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def agent_name(text: str) -> str:
    """The argparse type of an agent's name (and of a market id, which follows the same rule)."""
    if re.fullmatch(AGENT_NAME_PATTERN, text) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a name: {NAME_RULE}")
    return text


def positive_int(text: str) -> int:
    """The argparse type of a count: a whole number >= 1."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """The argparse type of a limit where 0 means none: a whole number >= 0."""
    return _whole_number(text, 0)


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"a count is at least {least}, not {text}")
    return value


def amount(text: str) -> float:
    """The argparse type of a bid or a budget: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"an amount is a finite number >= 0, not {text}")
    return value


def add_client_endpoints(parser: argparse.ArgumentParser) -> None:
    """``--market`` and ``--feed`` of a command whose agents register and bid."""
    parser.add_argument(
        "--market", type=endpoint, default=DEFAULT_MARKET_ENDPOINT, help="the auctioneer's market endpoint"
    )
    parser.add_argument("--feed", type=endpoint, default=DEFAULT_FEED_ENDPOINT, help="the auctioneer's feed endpoint")


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """``-v``/``--verbose``: more logging (repeatable), read by :func:`run_command`."""
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeatable)")


def add_db_flag(parser: argparse.ArgumentParser, help: str = "the exchange's ledger") -> None:
    """``--db``: the exchange's ledger, by default the one ``auctioneer serve`` writes."""
    parser.add_argument(
        "--db", default=DEFAULT_DB, help=f"{help}: an SQLite file or a postgresql:// URL (default: {DEFAULT_DB})"
    )


def check_writable(path: Path, flag: str) -> None:
    """Refuse now, not after a whole run, a file ``flag`` names that cannot be written (its directory
    is created if missing)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot create {path.parent}: {exc.strerror}") from None
    if path.is_dir() or not os.access(path.parent, os.W_OK):
        raise UsageError(f"{flag} {path}: not a file this user can write")


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity, 2)
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(console=stderr, show_path=False)], force=True
    )


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the chosen command's ``run(args) -> int``."""
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "verbose", 0))
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        code = command(args)
        sys.stdout.flush()
        return code
    except UserError as exc:
        stderr.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        stderr.print("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``auctioneer ledger --json | head``): stop quietly, as the Python
        # documentation advises (stdout to /dev/null so the interpreter's last flush cannot fail).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1

"""``auctioneer serve``: run a market until it closes (or until Ctrl-C / SIGTERM).

Settings come from ``--config FILE`` (TOML, the settings' field names as keys) and the flags, which
win. The same command on the same ``--db`` continues a stopped market after its last committed round.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from auctioneer.serve import serve
from auctioneer.server import Broadcast, Observer
from auctioneer.settings import ServeSettings, load_settings
from cli.console import read_toml, stdout
from cli.flags import add_settings_flags, settings_values
from protocol.messages import MarketClosed, RoundResult


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("serve", help="run a market (auctioneer process)", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML file with the settings below (keys: field names)")
    parser.add_argument("--quiet", action="store_true", help="print nothing per round")
    add_settings_flags(parser, ServeSettings)
    parser.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    values = read_toml(args.config, "config") if args.config is not None else {}
    return load_settings(values, settings_values(args))


def print_round(message: Broadcast) -> None:
    if isinstance(message, RoundResult):
        paid = sum(message.payments.values())
        token = repr(message.token) if message.token is not None else "[dim]no bids[/dim]"
        stdout.print(f"round {message.round}: {token}  ({len(message.bids)} bids, {paid:.4g} paid)", highlight=False)


async def serve_until_signalled(settings: ServeSettings, observer: Observer | None) -> MarketClosed | None:
    """Serve until the market closes, or until SIGINT/SIGTERM asks the market to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return await serve(settings, observer, stop)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    closed = asyncio.run(serve_until_signalled(settings, None if args.quiet else print_round))
    if closed is None:
        stdout.print(f"stopped; run the same command to continue the market in {settings.db}")
    elif not args.quiet:
        stdout.print(f"[bold]market closed[/bold] ({closed.reason}) after {closed.rounds} rounds: {closed.text!r}")
    return 0

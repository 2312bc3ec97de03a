"""``auctioneer serve``: run an exchange: the market a ``--prompt`` opens, those a config file lists,
and those operators open (``auctioneer market open``).

Settings come from ``--config FILE`` (TOML, the settings' field names as keys) and the flags, which
win. The market settings are the defaults of every market the exchange opens. With markets opened at
start, serve exits when they have all closed (unless ``--stay``); without, it waits for operators
until Ctrl-C / SIGTERM. The same command on the same ``--db`` continues every market where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import signal
import socket
from pathlib import Path

from auctioneer.exchange import Exchange
from auctioneer.metrics import AuctioneerMetrics
from auctioneer.serve import Started, serve
from auctioneer.server import Observer
from auctioneer.settings import ServeSettings, load_settings
from cli.console import read_toml, stdout
from cli.flags import add_settings_flags, settings_values
from dashboard.board import Board
from dashboard.spectator import spectate
from dashboard.web import bind_http, dashboard_app, serve_http
from protocol.messages import MarketOpened, Message, RoundResult


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("serve", help="run a market (auctioneer process)", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML file with the settings below (keys: field names)")
    parser.add_argument("--quiet", action="store_true", help="print nothing per round")
    add_settings_flags(parser, ServeSettings)
    parser.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    values = read_toml(args.config, "config") if args.config is not None else {}
    return load_settings(values, settings_values(args))


def print_progress(message: Message) -> None:
    if isinstance(message, RoundResult):
        paid = sum(message.payments.values())
        token = repr(message.token) if message.token is not None else "[dim]no bids[/dim]"
        stdout.print(
            f"{message.market} round {message.round}: {token}  ({len(message.bids)} bids, {paid:.4g} paid)",
            highlight=False,
        )
    elif isinstance(message, MarketOpened):
        stdout.print(f"market {message.market.id} opened: {message.market.rules.prompt!r}", highlight=False)


def local_endpoint(endpoint: str) -> str:
    """Where this host reaches an endpoint it binds (``*`` and ``0.0.0.0`` are every interface)."""
    scheme, _, rest = endpoint.partition("://")
    host, _, port = rest.rpartition(":")
    return f"{scheme}://127.0.0.1:{port}" if host in ("*", "0.0.0.0") else endpoint


def web_dashboard(settings: ServeSettings, sock: socket.socket, board: Board) -> Started:
    """The page and ``/metrics`` beside the exchange. Without CurveZMQ the page's board follows the
    exchange as a spectator over loopback (history included); with it, the board is fed the
    broadcasts in-process (what happens from now on)."""

    async def started(_: Exchange, metrics: AuctioneerMetrics) -> None:
        app = serve_http(dashboard_app(board, metrics.render), sock)
        if settings.curve_secret is not None:
            board.set_reachable(True)
            await app
        else:
            await asyncio.gather(app, spectate(board, local_endpoint(settings.market), local_endpoint(settings.feed)))

    return started


async def serve_until_signalled(
    settings: ServeSettings, observer: Observer | None, started: Started | None = None
) -> Exchange:
    """Serve until the exchange is finished, or until SIGINT/SIGTERM asks it to stop."""
    stop = asyncio.Event()
    # `kill -USR1 PID` writes every thread's stack to stderr: what a stuck auctioneer is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return await serve(settings, observer, stop, started)


def observers(*functions: Observer | None) -> Observer | None:
    """One observer calling each of ``functions`` that is not None."""
    chosen = [f for f in functions if f is not None]
    if len(chosen) <= 1:
        return chosen[0] if chosen else None

    def every(message: Message) -> None:
        for function in chosen:
            function(message)

    return every


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    started, board = None, None
    if settings.http is not None:
        sock, board = bind_http(settings.http), Board()
        host, port = sock.getsockname()[:2]
        stdout.print(f"dashboard and /metrics on [bold]http://{host}:{port}/[/bold]", highlight=False)
        started = web_dashboard(settings, sock, board)
    in_process = board.apply if board is not None and settings.curve_secret is not None else None
    observer = observers(None if args.quiet else print_progress, in_process)
    exchange = asyncio.run(serve_until_signalled(settings, observer, started))
    if not exchange.finished:
        stdout.print(f"stopped; run the same command to continue the exchange in {settings.db}")
    elif not args.quiet:
        for status in exchange.recent:
            stdout.print(
                f"[bold]market {status.market.id} closed[/bold] ({status.closed}) after {status.round} rounds: "
                f"{status.text!r}"
            )
    return 0

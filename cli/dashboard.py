"""``auctioneer dashboard``: the live web page of an exchange, from a spectator that never registers
(feed and ``sync_request`` only), with ``/metrics``. Open the printed address in a browser.

``serve --http HOST:PORT`` serves the same page from the auctioneer itself."""

from __future__ import annotations

import argparse
import asyncio

from cli.console import stdout
from cli.watch import add_spectator_endpoints, market_endpoint
from dashboard.board import Board
from dashboard.spectator import spectate
from dashboard.web import bind_http, board_metrics, dashboard_app, serve_http


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("dashboard", help="a live web dashboard of an exchange", description=__doc__)
    add_spectator_endpoints(parser)
    parser.add_argument("--market-id", help="show only this market (default: every market)")
    parser.add_argument("--http", default="127.0.0.1:8080", help="HOST:PORT to serve the page on")
    parser.set_defaults(run=run)


async def run_dashboard(endpoint: str, feed: str, market: str | None, http: str) -> None:
    sock = bind_http(http)
    host, port = sock.getsockname()[:2]
    stdout.print(f"dashboard on [bold]http://{host}:{port}/[/bold] (Ctrl-C to stop)", highlight=False)
    board = Board()
    await asyncio.gather(
        spectate(board, endpoint, feed, market), serve_http(dashboard_app(board, board_metrics(board)), sock)
    )


def run(args: argparse.Namespace) -> int:
    asyncio.run(run_dashboard(market_endpoint(args), args.feed, args.market_id, args.http))
    return 0

"""``auctioneer watch``: follow a market live without bidding (resyncs by itself after gaps).

Without ``--market-id``, the exchange's default market (or its only market)."""

from __future__ import annotations

import argparse
import asyncio

from rich.live import Live

from cli.console import stdout
from cli.live_view import MarketView
from protocol.client import FeedEvent, follow_market


async def watch_live(endpoint: str, feed: str, view: MarketView, market: str | None = None) -> MarketView:
    """Show ``view`` live, folding the market's feed into it, until the market closes."""
    with Live(view.render(), console=stdout, refresh_per_second=8) as live:

        def show(event: FeedEvent) -> None:
            view.apply(event)
            live.update(view.render())

        await follow_market(market, endpoint, feed, show)
    return view


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("watch", help="watch a market live (spectator)", description=__doc__)
    parser.add_argument("--feed", default="tcp://127.0.0.1:5556", help="the auctioneer's feed endpoint")
    parser.add_argument("--market", help="the market endpoint for resync (default: the feed's host, port 5555)")
    parser.add_argument("--market-id", help="the market to watch (default: the exchange's default market)")
    parser.set_defaults(run=run)


def default_market_endpoint(feed: str) -> str:
    host, _, _port = feed.rpartition(":")
    return f"{host}:5555"


def run(args: argparse.Namespace) -> int:
    endpoint = args.market or default_market_endpoint(args.feed)
    asyncio.run(watch_live(endpoint, args.feed, MarketView(), args.market_id))
    return 0

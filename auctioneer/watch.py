"""``auctioneer watch``: follow a market live without bidding (resyncs by itself after gaps)."""

from __future__ import annotations

import argparse
import asyncio

import zmq.asyncio
from rich.console import Console
from rich.live import Live

from auctioneer.live_view import MarketView
from protocol.client import FeedFollower, MarketClient

console = Console()


async def watch(market: str, feed: str, view: MarketView, live: Live | None = None) -> MarketView:
    """Fold the market's feed into ``view`` until the market closes."""
    context = zmq.asyncio.Context()
    client = MarketClient(context, market)
    client.connect()
    follower = FeedFollower(context, feed, client)
    try:
        async for event in follower.events():
            view.apply(event)
            if live is not None:
                live.update(view.render())
    finally:
        follower.close()
        client.close()
        context.term()
    return view


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("watch", help="watch a market live (spectator)", description=__doc__)
    parser.add_argument("--feed", default="tcp://127.0.0.1:5556", help="the auctioneer's feed endpoint")
    parser.add_argument("--market", help="the market endpoint for resync (default: the feed's host, port 5555)")
    parser.set_defaults(run=run)


def default_market_endpoint(feed: str) -> str:
    host, _, _port = feed.rpartition(":")
    return f"{host}:5555"


def run(args: argparse.Namespace) -> int:
    view = MarketView()
    market = args.market or default_market_endpoint(args.feed)
    with Live(view.render(), console=console, refresh_per_second=8) as live:
        asyncio.run(watch(market, args.feed, view, live))
    return 0

"""``auctioneer watch``: follow a market live without bidding (resyncs by itself after gaps).

Without ``--market-id``, the exchange's default market (or its only market)."""

from __future__ import annotations

import argparse
import asyncio

from rich.live import Live

from cli.console import UsageError, endpoint, stdout
from cli.live_view import MarketView
from protocol.client import FeedEvent, follow_market
from protocol.errors import ProtocolError
from protocol.sockets import DEFAULT_FEED_ENDPOINT, DEFAULT_MARKET_ENDPOINT


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
    add_spectator_endpoints(parser)
    parser.add_argument("--market-id", help="the market to watch (default: the exchange's default market)")
    parser.set_defaults(run=run)


def add_spectator_endpoints(parser: argparse.ArgumentParser) -> None:
    """``--feed`` and ``--market`` of a spectator (watch, dashboard): the market endpoint, for resync,
    defaults to the feed's host at the default market port."""
    parser.add_argument("--feed", type=endpoint, default=DEFAULT_FEED_ENDPOINT, help="the auctioneer's feed endpoint")
    parser.add_argument(
        "--market", type=endpoint, help="the market endpoint, for resync (default: the feed's host, port 5555)"
    )


def market_endpoint(args: argparse.Namespace) -> str:
    """``--market``, or the ``tcp://`` feed's host at the default market port."""
    if args.market:
        return str(args.market)
    if not args.feed.startswith("tcp://"):
        raise UsageError(f"the feed {args.feed} is not tcp://HOST:PORT: pass the market endpoint with --market")
    host = args.feed.removeprefix("tcp://").rpartition(":")[0]
    return f"tcp://{host}:{DEFAULT_MARKET_ENDPOINT.rpartition(':')[2]}"


def run(args: argparse.Namespace) -> int:
    try:
        asyncio.run(watch_live(market_endpoint(args), args.feed, MarketView(), args.market_id))
    except ProtocolError as exc:
        stdout.print()  # below the live view's last frame
        raise UsageError(f"{exc.code}: {exc.message} (auctioneer markets lists the exchange's markets)") from None
    return 0

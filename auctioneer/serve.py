"""``auctioneer serve``: run a market until it closes (or until Ctrl-C / SIGTERM)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from rich.console import Console

from auctioneer.ledger import Ledger, LedgerError
from auctioneer.market import Market
from auctioneer.mechanism import AGGREGATIONS, PAYMENTS, SELECTION_MODES
from auctioneer.security import CurveServer
from auctioneer.server import AuctioneerServer, Broadcast
from auctioneer.settings import MarketSettings, load_settings
from protocol.cli import UsageError
from protocol.messages import MarketClosed, RoundOpen, RoundResult
from protocol.sockets import is_loopback_endpoint

console = Console()


def add_market_flags(parser: argparse.ArgumentParser) -> None:
    """The mechanism flags shared by ``serve``, ``demo`` and ``simulate``."""
    group = parser.add_argument_group("mechanism")
    group.add_argument("--aggregation", choices=sorted(AGGREGATIONS))
    group.add_argument("--payment", choices=sorted(PAYMENTS))
    group.add_argument("--mode", choices=sorted(SELECTION_MODES))
    group.add_argument("--temperature", type=float)
    group.add_argument("--seed", help="64 hex chars; derives every round's seed (reproducible markets)")
    group.add_argument("--max-tokens", type=int, dest="max_tokens")
    group.add_argument("--stop-token", dest="stop_token")
    group.add_argument("--round-timeout", type=float, dest="round_timeout", help="seconds a round collects bids")
    group.add_argument(
        "--round-pause", type=float, dest="round_pause", help="seconds between a result and the next round"
    )


MARKET_FLAGS = (
    "aggregation",
    "payment",
    "mode",
    "temperature",
    "seed",
    "max_tokens",
    "stop_token",
    "round_timeout",
    "round_pause",
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("serve", help="run a market (auctioneer process)", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML file with the same settings as the flags; flags win")
    parser.add_argument("--market", help="ROUTER endpoint to bind (default tcp://127.0.0.1:5555)")
    parser.add_argument("--feed", help="PUB endpoint to bind (default tcp://127.0.0.1:5556)")
    parser.add_argument("--db", type=Path, help="SQLite ledger (default market.db); reusing it resumes the market")
    parser.add_argument("--prompt")
    parser.add_argument("--min-agents", type=int, dest="min_agents", help="agents needed before round 1")
    parser.add_argument("--max-idle-rounds", type=int, dest="max_idle_rounds", help="close after N rounds without bids")
    parser.add_argument("--budget", type=float, help="default budget per agent (none: unlimited)")
    parser.add_argument("--heartbeat", type=float, dest="heartbeat_interval", help="seconds between heartbeats")
    parser.add_argument("--curve-secret", type=Path, dest="curve_secret", help="server secret key (CurveZMQ on)")
    parser.add_argument(
        "--authorized-keys", type=Path, dest="authorized_keys", help="directory of agents' public NAME.key files"
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing per round")
    add_market_flags(parser)
    parser.set_defaults(run=run)


SERVE_FLAGS = (
    "market",
    "feed",
    "db",
    "prompt",
    "min_agents",
    "max_idle_rounds",
    "budget",
    "heartbeat_interval",
    "curve_secret",
    "authorized_keys",
    *MARKET_FLAGS,
)


def settings_from_args(args: argparse.Namespace) -> MarketSettings:
    overrides: dict[str, Any] = {flag: getattr(args, flag, None) for flag in SERVE_FLAGS}
    return load_settings(getattr(args, "config", None), overrides)


def print_broadcast(message: Broadcast) -> None:
    if isinstance(message, RoundOpen):
        return
    if isinstance(message, RoundResult):
        paid = sum(message.payments.values())
        token = repr(message.token) if message.token is not None else "[dim]no bids[/dim]"
        console.print(f"round {message.round}: {token}  ({len(message.bids)} bids, {paid:.4g} paid)", highlight=False)
    elif isinstance(message, MarketClosed):
        console.print(f"[bold]market closed[/bold] ({message.reason}) after {message.rounds} rounds: {message.text!r}")


async def serve(settings: MarketSettings, quiet: bool = False) -> MarketClosed | None:
    """Run a market with these settings until it closes or a signal arrives."""
    for endpoint in (settings.market, settings.feed):
        if not is_loopback_endpoint(endpoint) and settings.curve_secret is None:
            console.print(
                f"[yellow]warning:[/yellow] {endpoint} is reachable from other hosts and CurveZMQ is off: "
                "anyone who can connect can bid under any name. Use --curve-secret/--authorized-keys."
            )
    try:
        market = Market(settings, Ledger(settings.db))
    except LedgerError as exc:
        raise UsageError(str(exc)) from None
    if market.closed is not None:
        console.print(f"market in {settings.db} already closed ({market.closed.reason}): {market.closed.text!r}")
        return market.closed
    server = AuctioneerServer(market, observer=None if quiet else print_broadcast)
    if settings.curve_secret is not None:
        server.configure_curve(CurveServer(settings))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.stop)
    try:
        return await server.run()
    except Exception as exc:
        if "Address already in use" in str(exc):
            raise UsageError(f"cannot bind {settings.market} / {settings.feed}: address already in use") from None
        raise
    finally:
        market.ledger.close()


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    closed = asyncio.run(serve(settings, args.quiet))
    if closed is None:
        console.print(f"stopped; run the same command to continue the market in {settings.db}")
    return 0

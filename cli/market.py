"""``auctioneer market open|close``, ``auctioneer markets`` and ``auctioneer budget``: operate an exchange.

Every command is a request on the exchange's market socket. ``market open`` sends the market
settings given as flags (the others take the exchange's defaults) and prints the new market's id;
``market close ID`` ends a market now; ``markets`` lists the open and recently closed markets with
their round, text and revenue; ``budget AGENT AMOUNT`` (or ``unlimited``) sets an agent's budget
across the exchange from now on, across restarts too, and prints its account. Under CurveZMQ the
operator authenticates with its key (``--curve-secret``, ``--server-key``) and must be named in the
exchange's ``operators``; without it, the exchange accepts operators from loopback only (by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from pydantic import ValidationError
from rich.table import Table

from agent_client.settings import CurveClientSettings
from auctioneer.ledger import AccountState, account_row
from auctioneer.settings import MarketSettings
from cli.console import UsageError, agent_name, amount, endpoint, stdout
from cli.flags import add_settings_flags, comma_list, settings_from_flags, settings_values
from protocol.client import ask
from protocol.errors import describe_validation_error
from protocol.messages import (
    AccountStatus,
    CloseMarket,
    Error,
    ListMarkets,
    MarketList,
    MarketStatus,
    MarketStatusReply,
    Message,
    OpenMarket,
    SetBudget,
)
from protocol.sockets import DEFAULT_MARKET_ENDPOINT


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    market = subparsers.add_parser("market", help="open or close a market of a running exchange", description=__doc__)
    actions = market.add_subparsers(dest="action", required=True, metavar="ACTION")
    opening = actions.add_parser("open", help="open a market; prints its id", description=__doc__)
    add_connection_flags(opening)
    opening.add_argument("--id", type=agent_name, help="the market's id (default: generated)")
    opening.add_argument("--agents", type=comma_list, help="only these agents take part (default: every agent)")
    opening.add_argument(
        "--reference-agent", type=agent_name, help="a registered agent whose bids are the market's reference p_0"
    )
    opening.add_argument("--shard", help="the shard to serve it (an exchange of several; default: the least loaded)")
    add_settings_flags(opening, MarketSettings, title="market settings (the exchange's defaults otherwise)")
    opening.set_defaults(run=run_open)
    closing = actions.add_parser("close", help="end a market now", description=__doc__)
    add_connection_flags(closing)
    closing.add_argument("market_id", metavar="ID", type=agent_name, help="the market to close")
    closing.set_defaults(run=run_close)
    listing = subparsers.add_parser("markets", help="list an exchange's open and recent markets", description=__doc__)
    add_connection_flags(listing)
    listing.set_defaults(run=run_list)
    budget = subparsers.add_parser("budget", help="set an agent's budget in a running exchange", description=__doc__)
    add_connection_flags(budget)
    budget.add_argument("agent", metavar="AGENT", type=agent_name, help="the agent's name")
    budget.add_argument("amount", metavar="AMOUNT", type=budget_amount, help="the new budget, or 'unlimited'")
    budget.set_defaults(run=run_budget)


def budget_amount(text: str) -> float | None:
    """A budget as given on the command line: a finite number >= 0, or ``unlimited`` (None)."""
    if text == "unlimited":
        return None
    try:
        return amount(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"a budget is a finite number >= 0 or 'unlimited', not {text}") from None


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exchange", type=endpoint, default=DEFAULT_MARKET_ENDPOINT, help="the exchange's market socket endpoint"
    )
    add_settings_flags(parser, CurveClientSettings, title="CurveZMQ (the operator's key)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
    parser.add_argument("--json", action="store_true", help="print JSON")


def request(args: argparse.Namespace, message: Message) -> Message:
    """Send ``message`` to the exchange; an error reply or silence is one line for the user."""
    try:
        curve = settings_from_flags(args, CurveClientSettings).curve_setup()
        reply = asyncio.run(ask(args.exchange, message, curve, args.timeout))
    except TimeoutError:
        raise UsageError(
            f"no answer from the exchange at {args.exchange} within {args.timeout:g}s (is it running?)"
        ) from None
    if isinstance(reply, Error):
        raise UsageError(f"the exchange refused: {reply.code}: {reply.message}")
    return reply


def status_json(status: MarketStatus) -> dict[str, object]:
    return {
        "market": status.market.id,
        "prompt": status.market.rules.prompt,
        "round": status.round,
        "text": status.text,
        "revenue": status.revenue,
        "closed": status.closed,
        "agents": status.market.agents,
        "reference_agent": status.market.reference_agent,
        "shard": status.market.shard,
        "market_endpoint": status.market.market_endpoint,
        "feed_endpoint": status.market.feed_endpoint,
        "settings": status.market.rules.model_dump(mode="json"),
    }


def print_json(document: object) -> None:
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


def run_open(args: argparse.Namespace) -> int:
    try:
        message = OpenMarket(
            settings=settings_values(args),
            market=args.id,
            agents=args.agents,
            reference_agent=args.reference_agent,
            shard=args.shard,
        )
    except ValidationError as exc:  # names given with --id, --agents or --reference-agent
        raise UsageError(f"cannot open that market: {describe_validation_error(exc)}") from None
    reply = request(args, message)
    assert isinstance(reply, MarketStatusReply)
    if args.json:
        print_json(status_json(reply.status))
    else:
        where = f" (on shard {reply.status.market.shard} at {reply.status.market.market_endpoint})"
        stdout.print(reply.status.market.id + (where if reply.status.market.shard else ""), highlight=False)
    return 0


def run_close(args: argparse.Namespace) -> int:
    reply = request(args, CloseMarket(market=args.market_id))
    assert isinstance(reply, MarketStatusReply)
    if args.json:
        print_json(status_json(reply.status))
    else:
        stdout.print(f"market {reply.status.market.id} closed after {reply.status.round} rounds", highlight=False)
    return 0


def run_budget(args: argparse.Namespace) -> int:
    reply = request(args, SetBudget(agent=args.agent, budget=args.amount))
    assert isinstance(reply, AccountStatus)
    account = account_row(AccountState(reply.budget, reply.reserved, reply.spent))
    if args.json:
        print_json({"agent": reply.agent, **account})
        return 0
    budget = "unlimited" if reply.budget is None else f"{reply.budget:g}"
    left = "" if account["remaining"] is None else f", remaining {account['remaining']:g}"
    stdout.print(
        f"{reply.agent}: budget {budget}, spent {reply.spent:g}, reserved by open bids {reply.reserved:g}{left}",
        highlight=False,
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    reply = request(args, ListMarkets())
    assert isinstance(reply, MarketList)
    if args.json:
        print_json({"default": reply.default, "markets": [status_json(status) for status in reply.markets]})
        return 0
    table = Table(title=f"markets of {args.exchange}")
    sharded = any(status.market.shard for status in reply.markets)
    for column in ("market", *(["shard"] if sharded else []), "state", "round", "text", "revenue"):
        table.add_column(column, justify="right" if column in ("round", "revenue") else "left")
    for status in reply.markets:
        state = "open" if status.closed is None else f"closed ({status.closed})"
        text = status.text if len(status.text) <= 60 else "..." + status.text[-57:]
        where = [status.market.shard or "-"] if sharded else []
        table.add_row(status.market.id, *where, state, str(status.round), repr(text), f"{status.revenue:.4g}")
    stdout.print(table)
    return 0

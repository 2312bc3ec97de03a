"""``auctioneer ledger``: an exchange's record, as tables or as JSON.

With ``--market ID``, one market's rounds, bids, payments, sponsors and balances. Without, the same
for the only market of a ledger that holds one; for an exchange of several, its markets and every
agent's budget account (budget, spent, reserved as of the last commit, remaining). Tables list the
markets opened last (``--last``, 50 by default); JSON lists every market unless ``--last`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.table import Table

from auctioneer.ledger import open_ledger
from cli.console import add_db_flag, non_negative_int, stdout

TABLE_MARKETS = 50  # markets an exchange's overview lists as a table unless --last says otherwise


def ledger_tables(document: dict[str, Any]) -> list[Table]:
    """The rounds and the balances of a ledger document, as tables."""
    rounds = Table(title=f"market {document['market']}: {len(document['rounds'])} rounds")
    for column in ("round", "token", "aggregate (top 3)", "bids", "payments"):
        rounds.add_column(column)
    for r in document["rounds"]:
        top = sorted(r["distribution"].items(), key=lambda kv: -kv[1])[:3]
        rounds.add_row(
            str(r["round"]),
            repr(r["token"]) if r["token"] is not None else "-",
            ", ".join(f"{t!r} {p:.2f}" for t, p in top),
            ", ".join(f"{a} {b['bid']:.3g}" for a, b in r["bids"].items()),
            ", ".join(f"{a} {z:.3g}" for a, z in r["payments"].items()),
        )
    balances = Table(title="balances (total paid)")
    balances.add_column("agent")
    balances.add_column("paid", justify="right")
    for agent, paid in document["balances"].items():
        balances.add_row(agent, f"{paid:.6g}")
    return [rounds, balances]


def overview_tables(overview: dict[str, Any]) -> list[Table]:
    """An exchange's markets and its agents' budget accounts, as tables."""
    shown, count = len(overview["markets"]), overview["market_count"]
    caption = f"the last {shown} opened; --last 0 lists every market" if shown < count else None
    markets = Table(title=f"{count} markets ({overview['commits']} group commits)", caption=caption)
    for column in ("market", "state", "rounds", "text", "revenue"):
        markets.add_column(column, justify="right" if column in ("rounds", "revenue") else "left")
    for m in overview["markets"]:
        state = "open" if m["closed"] is None else f"closed ({m['closed']})"
        text = m["text"] if len(m["text"]) <= 60 else "..." + m["text"][-57:]
        markets.add_row(m["market"], state, str(m["rounds"]), repr(text), f"{m['revenue']:.4g}")
    accounts = Table(title="budget accounts")
    for column in ("agent", "budget", "spent", "reserved", "remaining"):
        accounts.add_column(column, justify="left" if column == "agent" else "right")
    for agent, account in overview["accounts"].items():
        figures = [account[k] for k in ("budget", "spent", "reserved", "remaining")]
        accounts.add_row(agent, *("-" if value is None else f"{value:.6g}" for value in figures))
    return [markets, accounts]


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("ledger", help="show an exchange's ledger", description=__doc__)
    add_db_flag(parser)
    parser.add_argument("--market", help="the market to show (default: the only one, or an overview)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--last",
        type=non_negative_int,
        help=f"an exchange's overview lists the N markets opened last (tables: {TABLE_MARKETS} unless given; 0: all)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    last = args.last if args.last is not None else (None if args.json else TABLE_MARKETS)
    with open_ledger(args.db, existing=True) as ledger:
        several = args.market is None and ledger.market_count() > 1
        document = ledger.overview(last or None) if several else ledger.document(args.market)
    if args.json:
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for table in overview_tables(document) if several else ledger_tables(document):
        stdout.print(table)
    if not several:
        stdout.print(f"text: {document['text']!r}")
    return 0

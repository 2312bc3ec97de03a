"""``auctioneer ledger``: a market's record, as tables or as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from auctioneer.ledger import Ledger
from cli.console import stdout


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


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("ledger", help="show a market's ledger", description=__doc__)
    parser.add_argument("--db", type=Path, default=Path("market.db"), help="the market's SQLite ledger")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with Ledger.open_existing(args.db) as ledger:
        document = ledger.document()
    if args.json:
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for table in ledger_tables(document):
        stdout.print(table)
    stdout.print(f"text: {document['text']!r}")
    return 0

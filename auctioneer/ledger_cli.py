"""``auctioneer ledger``: the market's record, as a table or as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from auctioneer.ledger import Ledger, LedgerError
from protocol.cli import UsageError

console = Console()


def open_existing(path: Path) -> Ledger:
    """Open a ledger that must already exist (reading never creates one)."""
    if not path.is_file():
        raise UsageError(f"no ledger at {path} (pass --db PATH of a market's database)")
    try:
        ledger = Ledger(path)
    except LedgerError as exc:
        raise UsageError(str(exc)) from None
    if ledger.definition() is None:
        raise UsageError(f"{path} holds no market")
    return ledger


def ledger_document(ledger: Ledger) -> dict[str, Any]:
    """The whole record as JSON-ready data (the shape ``--json`` prints)."""
    definition = ledger.definition() or {}
    rounds = []
    for stored in ledger.rounds():
        result = stored.result
        rounds.append(
            {
                "round": stored.round,
                "token": stored.token,
                "distribution": result.distribution.as_mapping() if result.distribution else {},
                "bids": {b.agent: {"bid": b.bid, "distribution": b.distribution()} for b in stored.bids},
                "payments": stored.payments,
                "seed": stored.seed.hex(),
                "seed_commitment": stored.seed_commitment,
            }
        )
    prompt = str(definition.get("prompt", ""))
    closed = ledger.closed()
    return {
        "market": ledger.market_id(),
        "prompt": prompt,
        "text": prompt + "".join(ledger.tokens()),
        "closed": closed.reason if closed else None,
        "settings": definition,
        "rounds": rounds,
        "balances": ledger.balances(),
    }


def ledger_tables(document: dict[str, Any]) -> list[Table]:
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
    with open_existing(args.db) as ledger:
        document = ledger_document(ledger)
    if args.json:
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for table in ledger_tables(document):
        console.print(table)
    console.print(f"text: {document['text']!r}")
    return 0

"""``auctioneer audit``: replay every stored round of every market through the mechanism, check every budget.

Prints a verdict per round (prefixed by its market when the exchange has several) and exits 1
naming the first round that does not verify, or an agent over its budget.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from auctioneer.audit import RoundVerdict, audit_ledger
from auctioneer.ledger import Ledger
from cli.console import stdout


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("audit", help="replay and verify every stored round", description=__doc__)
    parser.add_argument("--db", type=Path, default=Path("market.db"), help="the market's SQLite ledger")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with Ledger.open_existing(args.db) as ledger:
        verdicts, over_budget = audit_ledger(ledger)
        markets = len(ledger.market_ids())

    def where(verdict: RoundVerdict) -> str:
        return f"round {verdict.round}" if markets == 1 else f"market {verdict.market} round {verdict.round}"

    for verdict in verdicts:
        if verdict.ok:
            stdout.print(f"{where(verdict)}: [green]ok[/green]", highlight=False)
        else:
            stdout.print(f"{where(verdict)}: [red]MISMATCH[/red] {'; '.join(verdict.problems)}", highlight=False)
    for problem in over_budget:
        stdout.print(f"budget: [red]EXCEEDED[/red] {problem}", highlight=False)
    failed = [v for v in verdicts if not v.ok]
    if failed or over_budget:
        first = f"first mismatch in {where(failed[0])}" if failed else over_budget[0]
        stdout.print(f"[bold red]audit failed[/bold red]: {first} ({len(failed)} of {len(verdicts)} rounds)")
        return 1
    scope = "" if markets == 1 else f" in {markets} markets, every budget kept"
    stdout.print(f"[bold green]audit passed[/bold green]: {len(verdicts)} rounds verified{scope}")
    return 0

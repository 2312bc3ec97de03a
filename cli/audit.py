"""``auctioneer audit``: replay every stored round through the mechanism and check the record.

Prints a verdict per round and exits 1 naming the first round that does not verify.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from auctioneer.audit import audit_ledger
from auctioneer.ledger import Ledger
from cli.console import stdout


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("audit", help="replay and verify every stored round", description=__doc__)
    parser.add_argument("--db", type=Path, default=Path("market.db"), help="the market's SQLite ledger")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with Ledger.open_existing(args.db) as ledger:
        verdicts = audit_ledger(ledger)
    for verdict in verdicts:
        if verdict.ok:
            stdout.print(f"round {verdict.round}: [green]ok[/green]", highlight=False)
        else:
            stdout.print(f"round {verdict.round}: [red]MISMATCH[/red] {'; '.join(verdict.problems)}", highlight=False)
    failed = [v for v in verdicts if not v.ok]
    if failed:
        stdout.print(
            f"[bold red]audit failed[/bold red]: first mismatch in round {failed[0].round} "
            f"({len(failed)} of {len(verdicts)} rounds)"
        )
        return 1
    stdout.print(f"[bold green]audit passed[/bold green]: {len(verdicts)} rounds verified")
    return 0

"""``auctioneer migrate``: bring a ledger written by token-auction 0.1 (one market per file) to this version.

The market becomes the exchange's default market, every round, bid, payment and sponsor share is
kept, and the original file is copied first (to ``FILE.0.1``, or ``--backup PATH``). A ledger that
already has this version's layout is left alone. Afterwards ``ledger`` and ``audit`` read it, and
``serve --db FILE`` with the market's settings resumes the market.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from auctioneer.ledger.sqlite_schema import migrate_v01
from cli.console import add_db_flag, stdout


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("migrate", help="bring a 0.1 ledger to this version", description=__doc__)
    add_db_flag(parser, "the ledger to migrate, in place")
    parser.add_argument("--backup", type=Path, help="where to copy the 0.1 ledger first (default: FILE.0.1)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    migration = migrate_v01(args.db, args.backup)
    if migration is None:
        stdout.print(f"{args.db} already has this version's layout: nothing to migrate", highlight=False)
        return 0
    stdout.print(
        f"[bold green]migrated[/bold green] {args.db}: market {migration.market} (now the default market), "
        f"{migration.rounds} rounds, {migration.bids} bids, {migration.payments} payments; "
        f"the 0.1 ledger is kept at {migration.backup}",
        highlight=False,
    )
    return 0

"""``auctioneer migrate``: bring a ledger to this version, or copy an SQLite exchange into PostgreSQL.

``--db FILE``: a ledger written by token-auction 0.1 (one market per file) is brought to this
version in place: its market becomes the exchange's default market, every round, bid, payment and
sponsor share is kept, and the original file is copied first (to ``FILE.0.1``, or ``--backup PATH``).
A ledger that already has this version's layout is left alone.

``--db FILE --to postgresql://...``: every row of the SQLite exchange is copied into the PostgreSQL
database (one transaction, into a database holding no market), which is then audited; the file is
left as it was. ``serve --db postgresql://...`` then continues the exchange there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from auctioneer.ledger import is_postgres_url
from auctioneer.ledger.copy import copy_to_postgres
from auctioneer.ledger.sqlite_schema import migrate_v01
from cli.console import UsageError, add_db_flag, stdout


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "migrate", help="bring a 0.1 ledger to this version, or copy an exchange into PostgreSQL", description=__doc__
    )
    add_db_flag(parser, "the SQLite ledger to migrate, in place, or to copy")
    parser.add_argument("--backup", type=Path, help="where to copy the 0.1 ledger first (default: FILE.0.1)")
    parser.add_argument("--to", metavar="URL", help="copy the exchange into this postgresql:// database")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if is_postgres_url(args.db):
        raise UsageError("--db names the SQLite file to migrate or copy (a PostgreSQL ledger is already current)")
    if args.to is not None:
        return copy(args)
    migration = migrate_v01(Path(args.db), args.backup)
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


def copy(args: argparse.Namespace) -> int:
    if not is_postgres_url(args.to):
        raise UsageError(f"--to {args.to}: not a postgresql:// URL")
    with stdout.status(f"copying {args.db} into PostgreSQL"):
        copied = copy_to_postgres(Path(args.db), args.to)
    rows = ", ".join(f"{count} {table}" for table, count in copied.rows.items())
    stdout.print(f"copied {args.db}: {rows}", highlight=False)
    for problem in copied.problems:
        stdout.print(f"[red]audit:[/red] {problem}", highlight=False)
    if copied.problems:
        stdout.print(f"[bold red]the copy does not verify[/bold red]: {len(copied.problems)} problem(s)")
        return 1
    stdout.print(f"[bold green]audit of the copy passed[/bold green]: {copied.rounds_verified} rounds verified")
    return 0

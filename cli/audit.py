"""``auctioneer audit``: replay every stored round of every market through the mechanism, check every budget.

Prints a verdict per round as it is replayed (prefixed by its market when the exchange has several);
``--quiet`` prints only the rounds that do not verify, under a progress bar. Exits 1 naming the
first round that does not verify, or an agent over its budget.
"""

from __future__ import annotations

import argparse

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from auctioneer.audit import RoundVerdict, budget_problems, round_verdicts
from auctioneer.ledger import open_ledger
from cli.console import add_db_flag, stderr, stdout


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("audit", help="replay and verify every stored round", description=__doc__)
    add_db_flag(parser)
    parser.add_argument("--quiet", action="store_true", help="print only rounds that fail, with a progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_ledger(args.db, existing=True) as ledger:
        markets = len(ledger.market_ids())
        several = markets > 1

        def where(verdict: RoundVerdict) -> str:
            return f"market {verdict.market} round {verdict.round}" if several else f"round {verdict.round}"

        checked, failed = 0, []
        columns = (TextColumn("audit"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=stderr, transient=True, disable=not args.quiet) as progress:
            task = progress.add_task("rounds", total=ledger.round_count())
            for verdict in round_verdicts(ledger):
                checked += 1
                progress.advance(task)
                if not verdict.ok:
                    failed.append(where(verdict))
                    problems = "; ".join(verdict.problems)
                    stdout.print(f"{where(verdict)}: [red]MISMATCH[/red] {problems}", highlight=False)
                elif not args.quiet:
                    stdout.print(f"{where(verdict)}: [green]ok[/green]", highlight=False)
        over_budget = budget_problems(ledger)
    for problem in over_budget:
        stdout.print(f"budget: [red]EXCEEDED[/red] {problem}", highlight=False)
    if failed or over_budget:
        first = f"first mismatch in {failed[0]}" if failed else over_budget[0]
        stdout.print(f"[bold red]audit failed[/bold red]: {first} ({len(failed)} of {checked} rounds)")
        return 1
    scope = f" in {markets} markets, every budget kept" if several else ""
    stdout.print(f"[bold green]audit passed[/bold green]: {checked} rounds verified{scope}")
    return 0

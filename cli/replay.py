"""``auctioneer replay``: counterfactual replay of a recorded ledger under another rule.

Every recorded round's sealed bids and distributions are run through the rule given (the bids, the
distributions and the text held as recorded: the standard replay assumption for sealed bids; each
round keeps its recorded seed). Reports, per market and in total, revenue under both rules, each
agent's charges and allocation, and the share of rounds whose token would change, each a mean per
round with a 95 % bootstrap interval over rounds. ``--json`` for machines; ``--out DIR`` writes
``replay.json`` and ``replay.png`` (recorded against counterfactual charges per agent).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from auctioneer.ledger import open_ledger
from auctioneer.replay import MECHANISM_KEYS, REPLICATES, Replay, plan_replay, replay_ledger
from cli.console import UsageError, add_db_flag, stderr, stdout


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "replay", help="run a recorded ledger's bids through another rule", description=__doc__
    )
    add_db_flag(parser)
    parser.add_argument("--market", action="append", help="replay only this market (repeatable; default: all)")
    rule = parser.add_argument_group("the counterfactual rule (default: the recorded one)")
    rule.add_argument("--payment", help="first_price, second_price, critical_bid or none")
    rule.add_argument("--aggregation", help="linear or log_linear")
    rule.add_argument("--mode", help="the draw: sample, greedy or stable")
    rule.add_argument("--temperature", type=float)
    rule.add_argument("--eps", type=float, help="log_linear's smoothing")
    rule.add_argument("--reference-weight", type=float, help="the reference's weight b_0")
    parser.add_argument("--replicates", type=int, default=REPLICATES, help="bootstrap replicates")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", type=Path, help="write replay.json and replay.png here")
    parser.set_defaults(run=run)


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(args, key) for key in MECHANISM_KEYS if getattr(args, key) is not None}


def run(args: argparse.Namespace) -> int:
    if args.replicates < 10:
        raise UsageError("--replicates must be at least 10")
    with open_ledger(args.db, existing=True) as ledger:
        plan = plan_replay(ledger, overrides_of(args), args.market)
        columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=stderr, transient=True) as progress:
            task = progress.add_task("rounds", total=ledger.round_count() if args.market is None else None)
            replay = replay_ledger(ledger, plan, args.seed, args.replicates, lambda: progress.advance(task))
    document = replay.document()
    if args.out is not None:
        write_outputs(replay, args.out)
    if args.json:
        json.dump(document, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
        return 0
    for table in report_tables(document):
        stdout.print(table)
    stdout.print(f"[dim]{document['assumption']}[/dim]")
    return 0


def interval(figure: dict[str, float] | None, scale: float = 1.0) -> str:
    if figure is None:
        return "-"
    return f"{figure['mean'] * scale:.4g} [{figure['low'] * scale:.4g}, {figure['high'] * scale:.4g}]"


def report_tables(document: dict[str, Any]) -> list[Table]:
    """The total and each market: revenue and token changes, then per agent charges and allocation."""
    rule = ", ".join(f"{k}={v}" for k, v in document["counterfactual"].items()) or "the recorded rule"
    summary = Table(title=f"replay under {rule} (mean per round, 95 % interval)", title_justify="left")
    for column in ("market", "rounds", "revenue recorded", "revenue counterfactual", "token changed"):
        summary.add_column(column, justify="left" if column == "market" else "right")
    scopes = [("total", document["total"]), *document["markets"].items()]
    for name, scope in scopes:
        revenue = scope["revenue"] or {}
        summary.add_row(
            name,
            str(scope["rounds"]),
            interval(revenue.get("recorded")),
            interval(revenue.get("counterfactual")),
            interval(scope["token_changed"], 100.0) + " %" if scope["token_changed"] else "-",
        )
    agents = Table(title="per agent, all markets (mean per round, 95 % interval)", title_justify="left")
    for column in ("agent", "charge recorded", "charge counterfactual", "allocation recorded", "allocation cf."):
        agents.add_column(column, justify="left" if column == "agent" else "right")
    for agent, figures in sorted(document["total"]["agents"].items()):
        charge, allocation = figures.get("charge", {}), figures.get("allocation", {})
        agents.add_row(
            agent,
            interval(charge.get("recorded")),
            interval(charge.get("counterfactual")),
            interval(allocation.get("recorded")),
            interval(allocation.get("counterfactual")),
        )
    return [summary, agents]


def write_outputs(replay: Replay, out: Path) -> None:
    """``replay.json`` and ``replay.png``: each agent's total charges under both rules."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write to {out}: {exc.strerror}") from None
    document = replay.document()
    (out / "replay.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    agents = sorted(document["total"]["agents"])
    charges = [document["total"]["agents"][a].get("charge", {}) for a in agents]
    figure, axes = plt.subplots(figsize=(max(4.0, 1.2 * len(agents) + 2), 3.5))
    positions = range(len(agents))
    for offset, rule in ((-0.2, "recorded"), (0.2, "counterfactual")):
        totals = [c[rule]["total"] if rule in c else 0.0 for c in charges]
        axes.bar([p + offset for p in positions], totals, width=0.4, label=rule)
    axes.set_xticks(list(positions), agents, rotation=20)
    axes.set_ylabel("total charged")
    axes.set_title("revenue per agent: recorded vs counterfactual")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / "replay.png", dpi=120)
    plt.close(figure)

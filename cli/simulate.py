"""``auctioneer simulate SCENARIO.toml``: run a scenario's market and report what happened.

By default the auctioneer and every agent are separate processes over loopback TCP, shown live;
``--in-process`` runs the same mechanism, ledger and agents without sockets. ``--out`` gets the
SQLite ledger, ``summary.json`` and PNG plots; ``--repeat K`` runs K seeds and adds means and spreads.
``--sweep SETTING=V1,V2,...`` runs the scenario at each value of a numeric market setting and draws
the revenue-quality frontier (``frontier.json``, ``frontier.png``; quality needs a ``[quality]`` model).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from cli.console import UsageError, check_writable, read_toml, stdout
from cli.live_view import MarketView
from protocol.client import FeedEvent
from protocol.messages import RoundResult
from simulation.exchange import run_exchange_in_process, run_exchange_networked
from simulation.in_process import run_in_process
from simulation.networked import run_networked
from simulation.report import (
    aggregate_runs,
    headline,
    learned_bid_ratio,
    plot,
    plot_comparison,
    plot_exchange,
    summarize,
    summarize_exchange,
)
from simulation.scenario import Scenario
from simulation.sweep import Sweep, frontier_document, frontier_point, parse_sweep, plot_frontier


class FollowView(MarketView):
    """The spectator view plus a progress bar over the scenario's rounds."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.progress = Progress(TextColumn("rounds"), BarColumn(), MofNCompleteColumn())
        self.task = self.progress.add_task("rounds", total=rounds)

    def apply(self, event: FeedEvent) -> None:
        super().apply(event)
        if isinstance(event, RoundResult):
            self.progress.update(self.task, completed=event.round)

    def render(self) -> Group:
        return Group(super().render(), self.progress)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "simulate", help="run a scenario and report revenue, welfare, strategies", description=__doc__
    )
    parser.add_argument("scenario", type=Path, help="scenario TOML file (see examples/)")
    parser.add_argument("--out", type=Path, default=Path("simulation-out"), help="output directory")
    parser.add_argument("--in-process", action="store_true", help="no sockets: fast, for thousands of rounds")
    parser.add_argument("--rounds", type=int, help="override the scenario's number of rounds")
    parser.add_argument("--repeat", type=int, default=1, help="runs with different seeds")
    parser.add_argument("--seed", type=int, default=0, help="base seed (run k uses seed + k)")
    parser.add_argument(
        "--sweep",
        metavar="SETTING=V1,V2,...",
        help="run at each value of a numeric market setting; writes frontier.json and frontier.png",
    )
    parser.set_defaults(run=run)


def print_summary(summary: dict[str, object]) -> None:
    table = Table(
        title=f"{summary['rounds']} rounds: revenue {summary['revenue']:.4g}, welfare {summary['welfare']:.4g}"
    )
    for column in ("agent", "value", "mean bid", "paid", "utility", "mean TV", "mean KL"):
        table.add_column(column, justify="left" if column == "agent" else "right")
    agents = summary["agents"]
    assert isinstance(agents, dict)
    for name, agent in agents.items():

        def fmt(x: object) -> str:
            return "-" if x is None else f"{x:.4g}"

        table.add_row(
            name,
            fmt(agent["value"]),
            fmt(agent["mean_bid"]),
            fmt(agent["total_paid"]),
            fmt(agent["utility"]),
            fmt(agent["mean_tv"]),
            fmt(agent["mean_kl"]),
        )
    stdout.print(table)
    text = str(summary["text"])
    stdout.print(f"text: {text if len(text) <= 300 else '...' + text[-300:]!r}", highlight=False)
    print_quality(summary.get("quality"))


def print_quality(quality: object) -> None:
    """The text's quality under the reader's model against its ad-free baseline, or why none was measured."""
    if not isinstance(quality, dict):
        return
    if not quality["measured"]:
        stdout.print(f"text quality: not measured ({quality['why']})")
        return
    table = Table(title="text quality under the reader's model", title_justify="left")
    for column in ("text", "tokens", "NLL / token", "perplexity", "mean TV to the reader"):
        table.add_column(column, justify="left" if column == "text" else "right")
    for label, figures in (("the market's", quality["market"]), ("ad-free baseline", quality["baseline"])):
        tv = figures["mean_tv"]
        table.add_row(label, str(figures["tokens"]), f"{figures['mean_nll']:.3f}", f"{figures['perplexity']:.2f}",
                      "-" if tv is None else f"{tv:.3f}")  # fmt: skip
    stdout.print(table)
    stdout.print(f"the ads cost the reader {quality['nll_increase']:+.3f} nats per token", highlight=False)


def new_ledger(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    db = run_dir / "ledger.db"
    if db.exists():
        raise UsageError(f"{db} exists; pick a new --out (simulations never reuse a ledger)")
    return db


def run_exchange(args: argparse.Namespace, scenario: Scenario, run_dir: Path, seed: int) -> dict[str, Any]:
    """An ad-exchange scenario into ``run_dir``: ledger, summary.json, plots."""
    assert scenario.exchange is not None
    db = new_ledger(run_dir)
    with Progress(console=stdout, transient=True) as progress:
        if args.in_process:
            task = progress.add_task("rounds", total=scenario.expected_rounds())
            run_exchange_in_process(scenario, db, seed, lambda n: progress.update(task, completed=n))
        else:
            opening = progress.add_task("queries opened", total=scenario.exchange.count)
            closing = progress.add_task("markets closed", total=scenario.exchange.count)

            def show(opened: int, closed: int) -> None:
                progress.update(opening, completed=opened)
                progress.update(closing, completed=closed)

            settings = scenario.settings(db, seed)
            run_exchange_networked(args.scenario.resolve(), scenario, settings, seed, run_dir, show)
    return write_report(db, run_dir, summarize_exchange(db, scenario), plot_exchange, print_exchange_summary)


def print_exchange_summary(summary: dict[str, Any]) -> None:
    latency = (
        f"round latency p50 {summary['latency_p50'] * 1e3:.0f} ms, p99 {summary['latency_p99'] * 1e3:.0f} ms"
        if summary["latency_p50"] is not None
        else "no rounds"
    )
    table = Table(
        title=f"{summary['markets']} markets, {summary['rounds']} rounds in {summary['duration']:.1f}s: "
        f"revenue {summary['revenue']:.4g}, {latency}"
    )
    for column in ("advertiser", "budget", "spent", "share of budget"):
        table.add_column(column, justify="left" if column == "advertiser" else "right")
    for name, agent in summary["agents"].items():
        budget = agent["budget"]
        share = "-" if not budget else f"{agent['spent'] / budget:.0%}"
        table.add_row(name, "-" if budget is None else f"{budget:.4g}", f"{agent['spent']:.4g}", share)
    stdout.print(table)


def run_once(args: argparse.Namespace, scenario: Scenario, run_dir: Path, seed: int) -> dict[str, Any]:
    """One run of one payment rule into ``run_dir``: ledger, summary.json, plots."""
    if scenario.exchange is not None:
        return run_exchange(args, scenario, run_dir, seed)
    db = new_ledger(run_dir)
    if args.in_process:
        rounds = args.rounds or scenario.market.rounds
        with Progress(console=stdout, transient=True) as progress:
            task = progress.add_task(f"{run_dir.name}", total=rounds)
            run_in_process(scenario, db, seed, args.rounds, lambda n: progress.update(task, completed=n))
    else:
        settings = scenario.settings(db, seed, args.rounds)
        view = FollowView(settings.max_tokens)
        with Live(view.render(), console=stdout, refresh_per_second=8) as live:

            def show(event: FeedEvent) -> None:
                view.apply(event)
                live.update(view.render())

            run_networked(args.scenario.resolve(), settings, [a.name for a in scenario.agents], seed, run_dir, show)
    return write_report(db, run_dir, summarize(db, scenario), plot, print_summary)


def run(args: argparse.Namespace) -> int:
    scenario = Scenario.from_document(read_toml(args.scenario, "scenario"), args.scenario)
    if args.repeat < 1 or (args.rounds is not None and args.rounds < 1):
        raise UsageError("--repeat and --rounds must be at least 1")
    if scenario.exchange is not None and (args.repeat > 1 or args.rounds or len(scenario.payments()) > 1):
        raise UsageError("an exchange scenario runs once, with one payment rule (no --repeat, --rounds or list)")
    check_writable(args.out / "summary.json", "--out")
    if args.sweep is not None:
        return run_sweep(args, scenario, parse_sweep(args.sweep))
    rules = scenario.payments()
    overall: dict[str, Any] = {}
    for rule in rules:
        rule_dir = args.out / rule if len(rules) > 1 else args.out
        stdout.rule(f"payment = {rule}")
        summaries = [
            run_once(
                args, scenario.with_payment(rule), rule_dir / f"run-{k}" if args.repeat > 1 else rule_dir, args.seed + k
            )
            for k in range(args.repeat)
        ]
        if args.repeat > 1:
            overall[rule] = aggregate_runs(summaries)
            (rule_dir / "summary.json").write_text(json.dumps(overall[rule], indent=2))
            stdout.print(
                f"{rule}, {args.repeat} runs: revenue {overall[rule]['revenue']['mean']:.4g} "
                f"± {overall[rule]['revenue']['std']:.3g}, welfare {overall[rule]['welfare']['mean']:.4g} "
                f"± {overall[rule]['welfare']['std']:.3g}"
            )
        else:
            overall[rule] = summaries[0]
    if len(rules) > 1:
        print_comparison(overall)
        (args.out / "comparison.json").write_text(json.dumps(overall, indent=2))
        stdout.print(f"wrote {plot_comparison(overall, args.out)} and comparison.json")
    return 0


def run_sweep(args: argparse.Namespace, scenario: Scenario, sweep: Sweep) -> int:
    """The scenario at each value of the swept setting (``--repeat`` seeds each): the frontier."""
    if scenario.exchange is not None or len(scenario.payments()) > 1:
        raise UsageError("--sweep runs a market scenario with one payment rule")
    points = []
    for value, variant in sweep.scenarios(scenario):
        point_dir = args.out / f"{sweep.setting}={value:g}"
        stdout.rule(f"{sweep.setting} = {value:g}")
        summaries = [
            run_once(args, variant, point_dir / f"run-{k}" if args.repeat > 1 else point_dir, args.seed + k)
            for k in range(args.repeat)
        ]
        points.append(frontier_point(value, summaries))
    document = frontier_document(sweep, points)
    (args.out / "frontier.json").write_text(json.dumps(document, indent=2))
    print_frontier(document)
    stdout.print(f"wrote {plot_frontier(document, args.out)} and frontier.json")
    return 0


def print_frontier(document: dict[str, Any]) -> None:
    table = Table(title=f"the revenue-quality frontier over {document['setting']} (mean ± std over runs)")
    for column in ("value", "revenue", "NLL / token", "NLL added", "mean TV to the reader"):
        table.add_column(column, justify="right")

    def shown(figure: dict[str, float] | None) -> str:
        return "not measured" if figure is None else f"{figure['mean']:.4g} ± {figure['std']:.2g}"

    for point in document["points"]:
        table.add_row(f"{point['value']:g}", shown(point["revenue"]), shown(point["nll"]),
                      shown(point["nll_increase"]), shown(point["mean_tv"]))  # fmt: skip
    stdout.print(table)


def print_comparison(by_rule: dict[str, Any]) -> None:
    table = Table(title="payment rules compared (learned bid / value per agent)")
    for column in ("payment", "revenue", "welfare", "realised welfare"):
        table.add_column(column, justify="left" if column == "payment" else "right")
    names = list(next(iter(by_rule.values()))["agents"])
    for name in names:
        table.add_column(name, justify="right")
    for rule, summary in by_rule.items():
        ratios = [learned_bid_ratio(summary["agents"][name]) for name in names]
        table.add_row(
            rule,
            *(f"{headline(summary[key]):.4g}" for key in ("revenue", "welfare", "realised_welfare")),
            *("-" if ratio is None else f"{ratio:.2f}" for ratio in ratios),
        )
    stdout.print(table)


def write_report(
    db: Path,
    run_dir: Path,
    summary: dict[str, Any],
    plot_with: Callable[[dict[str, Any], Path], list[Path]],
    print_with: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Write ``summary.json`` and the plots into ``run_dir``, print the summary; return it."""
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    plots = plot_with(summary, run_dir)
    print_with(summary)
    stdout.print(f"wrote {db}, summary.json and {len(plots)} plots in {run_dir}")
    return summary

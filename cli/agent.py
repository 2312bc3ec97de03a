"""The ``agent-client`` command: run one agent (static, phrase, your own class, or a scenario's) in a market."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from pydantic import ValidationError
from rich.table import Table

from agent_client.agent import Agent
from agent_client.builtin import PhraseAgent, StaticAgent
from agent_client.loading import load_agent
from agent_client.report import AgentReport
from agent_client.runtime import AgentRejected, AgentRuntime, AuctioneerLost
from agent_client.scenario import build_agent as build_scenario_agent
from agent_client.settings import AgentChoice, AgentSettings
from cli.console import UsageError, add_verbose_flag, check_writable, read_toml, stdout
from cli.flags import add_settings_flags, settings_from_flags
from protocol import Distribution
from protocol.errors import describe_validation_error
from simulation.scenario import Scenario


def parse_distribution(text: str) -> dict[str, float]:
    """``"Large=0.8,Generative=0.2"`` or a JSON object; tokens are taken literally (spaces included)."""
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--distribution is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise UsageError("--distribution JSON must be an object of token: probability")
        return value
    distribution: dict[str, float] = {}
    for item in text.split(","):
        token, sep, prob = item.rpartition("=")
        try:
            distribution[token] = float(prob)
        except ValueError:
            sep = ""
        if not sep or not token:
            raise UsageError(f"--distribution item {item!r} must look like token=probability")
    return distribution


def checked_distribution(distribution: dict[str, float]) -> dict[str, float]:
    """``distribution`` if the auctioneer would accept it (the protocol's own checks), else one line why."""
    try:
        Distribution.from_mapping(distribution)
    except ValidationError as exc:
        raise UsageError(f"--distribution: {describe_validation_error(exc)}") from None
    return distribution


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-client", description=__doc__)
    add_verbose_flag(parser)
    add_settings_flags(parser, AgentSettings, title="the agent and its exchange")
    add_settings_flags(parser, AgentChoice, title="which agent (one of --distribution, --phrase, --agent, --scenario)")
    parser.add_argument("--quiet", action="store_true", help="no report at the end")
    parser.add_argument("--report-json", type=Path, help="also write this agent's report as JSON to FILE")
    parser.set_defaults(run=run)
    return parser


def build_agent(choice: AgentChoice, name: str) -> Agent:
    kind = choice.kind()
    if kind == "scenario":
        assert choice.scenario is not None
        scenario = Scenario.from_document(read_toml(choice.scenario, "scenario"), choice.scenario)
        return build_scenario_agent(scenario.agent(name), scenario.expected_rounds(), choice.scenario_seed)
    if kind == "agent":
        assert choice.agent is not None
        return load_agent(choice.agent, choice.parameters())
    assert choice.bid is not None
    if choice.distribution is not None:
        return StaticAgent(checked_distribution(parse_distribution(choice.distribution)), choice.bid)
    assert choice.phrase is not None
    try:
        return PhraseAgent(choice.phrase, choice.bid, choice.confidence, choice.alternative)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def print_report(report: AgentReport) -> None:
    for market in report.markets.values():
        table = Table(title=f"{report.name} in market {market.market}: {len(market.rounds)} rounds")
        for column in ("round", "bid", "status", "token", "payment"):
            table.add_column(column)
        for number in sorted(market.rounds):
            r = market.rounds[number]
            table.add_row(
                str(number), "-" if r.bid is None else f"{r.bid:.4g}", r.status, repr(r.token), f"{r.payment:.4g}"
            )
        stdout.print(table)
        stdout.print(f"market {market.market} closed ({market.closed_reason}): {market.text!r}")
    stdout.print(f"{report.name} paid {report.spent:.6g} in {len(report.markets)} market(s)")
    if report.verification_failures:
        stdout.print(f"[bold red]{report.verification_failures} round(s) FAILED verification[/bold red]")


async def run_until_closed(runtime: AgentRuntime) -> AgentReport:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await runtime.run()
    except asyncio.CancelledError:
        return runtime.report


def run(args: argparse.Namespace) -> int:
    settings = settings_from_flags(args, AgentSettings)
    agent = build_agent(settings_from_flags(args, AgentChoice), settings.name)
    for path, flag in ((settings.resume_file, "--resume-file"), (args.report_json, "--report-json")):
        if path is not None:
            check_writable(path, flag)
    runtime = AgentRuntime(
        agent,
        settings.name,
        settings.market,
        settings.feed,
        settings.curve_setup(),
        give_up_after=settings.give_up_after,
        stay=settings.stay,
        resume_file=settings.resume_file,
    )
    try:
        report = asyncio.run(run_until_closed(runtime))
    except AgentRejected as exc:
        raise UsageError(f"the auctioneer refused {settings.name}: {exc}") from None
    except AuctioneerLost as exc:
        raise UsageError(f"gave up: {exc} (is the auctioneer running at {settings.market}?)") from None
    if not args.quiet:
        print_report(report)
    if args.report_json:
        args.report_json.write_text(json.dumps(report.as_dict(), indent=2))
    if not report.all_closed and not settings.stay:
        stdout.print("[yellow]stopped before its markets closed[/yellow]")
        return 1
    return 0 if report.verification_failures == 0 else 1

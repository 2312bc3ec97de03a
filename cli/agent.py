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
from agent_client.loading import load_agent, parse_params
from agent_client.runtime import GIVE_UP_AFTER, AgentRejected, AgentReport, AgentRuntime, AuctioneerLost
from agent_client.scenario import build_agent as build_scenario_agent
from agent_client.security import curve_client_setup
from cli.console import UsageError, add_client_endpoints, agent_name, amount, check_writable, read_toml, stdout
from protocol import Distribution
from protocol.client import SocketSetup
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
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeatable)")
    add_client_endpoints(parser)
    parser.add_argument("--name", type=agent_name, required=True, help="agent name (letters, digits, _ . -)")
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--distribution", help='static agent: "Large=0.8,Generative=0.2" or JSON')
    kind.add_argument("--phrase", help="phrase agent: the text it wants written, e.g. ' Large Language Models.'")
    kind.add_argument("--agent", help="your own agent: package.module:ClassName")
    kind.add_argument("--scenario", help="the agent named --name in this scenario file (auctioneer simulate)")
    parser.add_argument("--bid", type=amount, help="bid per round (static and phrase agents)")
    parser.add_argument("--confidence", type=float, default=1.0, help="phrase agent: mass on its next word")
    parser.add_argument("--alternative", help="phrase agent: phrase that gets the remaining mass")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="parameter for --agent")
    parser.add_argument("--scenario-seed", type=int, default=0, help="seed for a scenario agent's randomness")
    parser.add_argument("--curve-secret", help="this agent's CurveZMQ secret key file")
    parser.add_argument("--server-key", help="the auctioneer's CurveZMQ public key file")
    parser.add_argument(
        "--give-up-after",
        type=float,
        default=GIVE_UP_AFTER,
        metavar="SECONDS",
        help="stop when the auctioneer has not answered for this long (default %(default)s)",
    )
    parser.add_argument(
        "--stay", action="store_true", help="keep waiting for new markets after every joined market closed"
    )
    parser.add_argument(
        "--resume-file",
        type=Path,
        help="keep the name's resume secret in FILE, so a restarted agent can return under its name (without CurveZMQ)",
    )
    parser.add_argument("--quiet", action="store_true", help="no report at the end")
    parser.add_argument("--report-json", type=Path, help="also write this agent's report as JSON to FILE")
    parser.set_defaults(run=run)
    return parser


def build_agent(args: argparse.Namespace) -> Agent:
    if args.scenario:
        path = Path(args.scenario)
        scenario = Scenario.from_document(read_toml(path, "scenario"), path)
        return build_scenario_agent(scenario.agent(args.name), scenario.expected_rounds(), args.scenario_seed)
    if args.agent:
        return load_agent(args.agent, parse_params(args.param))
    if args.bid is None:
        raise UsageError("--bid is required with --distribution and --phrase")
    if args.distribution:
        return StaticAgent(checked_distribution(parse_distribution(args.distribution)), args.bid)
    try:
        return PhraseAgent(args.phrase, args.bid, args.confidence, args.alternative)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def curve_setup(args: argparse.Namespace) -> SocketSetup | None:
    if not args.curve_secret and not args.server_key:
        return None
    if not (args.curve_secret and args.server_key):
        raise UsageError("CurveZMQ needs both --curve-secret and --server-key")
    return curve_client_setup(args.curve_secret, args.server_key)


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
    agent = build_agent(args)
    for path, flag in ((args.resume_file, "--resume-file"), (args.report_json, "--report-json")):
        if path is not None:
            check_writable(path, flag)
    runtime = AgentRuntime(
        agent,
        args.name,
        args.market,
        args.feed,
        curve_setup(args),
        give_up_after=args.give_up_after,
        stay=args.stay,
        resume_file=args.resume_file,
    )
    try:
        report = asyncio.run(run_until_closed(runtime))
    except AgentRejected as exc:
        raise UsageError(f"the auctioneer refused {args.name}: {exc}") from None
    except AuctioneerLost as exc:
        raise UsageError(f"gave up: {exc} (is the auctioneer running at {args.market}?)") from None
    if not args.quiet:
        print_report(report)
    if args.report_json:
        args.report_json.write_text(json.dumps(report.as_dict(), indent=2))
    if not report.all_closed and not args.stay:
        stdout.print("[yellow]stopped before its markets closed[/yellow]")
        return 1
    return 0 if report.verification_failures == 0 else 1

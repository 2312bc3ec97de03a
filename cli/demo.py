"""``auctioneer demo``: the article's market, live: an auctioneer and three agent processes on loopback.

Round 1 is the article's example: agents proposing (Large 0.8, Generative 0.2), (Large 1.0) and
(Generative 1.0) bid 1, 2 and 2, so the aggregate is Large 0.56, Generative 0.44. The agents are
phrase agents, so later rounds keep pulling towards their phrases and the text reads naturally.
The market's settings may be changed with the same flags as ``serve``'s. ``--llm`` runs the LLM demo
instead (:mod:`cli.llm_demo`: advertisers' language models, the ``[llm]`` extra and the model needed).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import subprocess
import tempfile
from pathlib import Path

from auctioneer.ledger import Ledger
from auctioneer.settings import MarketSettings, load_settings
from cli import llm_demo
from cli.console import UsageError, stdout
from cli.flags import add_settings_flags, as_arguments, settings_values
from cli.ledger import ledger_tables
from cli.live_view import MarketView
from cli.watch import watch_live
from simulation.processes import LocalMarket

PROMPT = "Mechanism Design for"
AGENTS = {
    "agent1": [
        "--phrase",
        " Large Language Models.",
        "--confidence",
        "0.8",
        "--alternative",
        " Generative AI.",
        "--bid",
        "1",
    ],
    "agent2": ["--phrase", " Large Language Models.", "--bid", "2"],
    "agent3": ["--phrase", " Generative AI agents.", "--bid", "2"],
}
FIXED = {"prompt": PROMPT, "min_agents": len(AGENTS)}
DEFAULTS = {
    "seed": hashlib.sha256(b"token-auction demo").hexdigest(),
    "max_tokens": 12,
    "stop_token": ".",
    "round_timeout": 2.0,
    "round_pause": 0.5,
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("demo", help="run the article's market live on loopback", description=__doc__)
    parser.add_argument("--db", type=Path, help="keep the ledger here (default: a temporary file)")
    parser.add_argument("--llm", action="store_true", help="three advertisers' SmolLM2 models and the reader's, live")
    add_settings_flags(parser, MarketSettings, exclude=FIXED, title="market settings")
    parser.set_defaults(run=run)


def serve_arguments(args: argparse.Namespace) -> list[str]:
    """``serve``'s flags for the demo's market, checked here first (a bad value is one line, at once)."""
    values = {**DEFAULTS, **settings_values(args), **FIXED}
    load_settings({}, values)
    return as_arguments(MarketSettings, values)


async def watch_until_closed(market: LocalMarket) -> bool:
    """Show the market live until it closes; False at once if the auctioneer fails instead."""
    watching = asyncio.create_task(watch_live(market.market, market.feed, MarketView()))
    failing = asyncio.create_task(exit_with_failure(market.processes[0]))
    done, _ = await asyncio.wait({watching, failing}, timeout=300, return_when=asyncio.FIRST_COMPLETED)
    for task in (watching, failing):
        task.cancel()
    return failing not in done


async def exit_with_failure(process: subprocess.Popen[bytes]) -> None:
    """Return once ``process`` exited with a failure (a clean exit is the market closing: never returns)."""
    while process.poll() is None:
        await asyncio.sleep(0.2)
    if process.returncode == 0:
        await asyncio.Future()


def run(args: argparse.Namespace) -> int:
    if args.llm:
        if settings_values(args):
            raise UsageError("--llm runs its own market: drop the market settings")
        return llm_demo.run(args.db)
    with tempfile.TemporaryDirectory(prefix="token-auction-demo-") as scratch:
        db = args.db or Path(scratch) / "demo.db"
        if db.exists():
            raise UsageError(f"{db} already exists; the demo starts a new market (pick another --db)")
        market = LocalMarket()
        market.start_auctioneer(db, serve_arguments(args), Path(scratch) / "auctioneer.log")
        for name, agent_args in AGENTS.items():
            market.start_agent(name, agent_args, Path(scratch) / f"{name}.log")
        stdout.print(
            f"[bold]token-auction demo[/bold]: auctioneer on {market.market} / {market.feed}, "
            f"agents {', '.join(AGENTS)}"
        )
        try:
            auctioneer_ran = asyncio.run(watch_until_closed(market))
            stdout.print()
            codes = market.wait(timeout=30 if auctioneer_ran else 0)
        finally:
            market.stop()
        if not auctioneer_ran:
            said = (Path(scratch) / "auctioneer.log").read_text().strip().splitlines() or ["(nothing logged)"]
            raise UsageError(f"the demo's auctioneer stopped: {said[-1]}")
        if any(codes):
            logs = "\n".join((Path(scratch) / f"{n}.log").read_text() for n in ["auctioneer", *AGENTS])
            stdout.print(logs)
            raise UsageError(f"a market process failed (exit codes {codes})")
        with Ledger.open_existing(db) as ledger:
            document = ledger.document()
    first = document["rounds"][0]["distribution"] if document["rounds"] else {}
    stdout.print(f"round 1 aggregate: {', '.join(f'{t!r} {p:.2f}' for t, p in sorted(first.items()))}")
    for table in ledger_tables(document):
        stdout.print(table)
    stdout.print(f"[bold]final text:[/bold] {document['text']}")
    return 0

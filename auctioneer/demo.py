"""``auctioneer demo``: the article's market, live: an auctioneer and three agent processes on loopback.

Round 1 is the article's example: agents proposing (Large 0.8, Generative 0.2), (Large 1.0) and
(Generative 1.0) bid 1, 2 and 2, so the aggregate is Large 0.56, Generative 0.44. The agents are
phrase agents, so later rounds keep pulling towards their phrases and the text reads naturally.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
from pathlib import Path

from rich.console import Console
from rich.live import Live

from auctioneer.ledger_cli import ledger_document, ledger_tables, open_existing
from auctioneer.live_view import MarketView
from auctioneer.processes import LocalMarket
from auctioneer.serve import MARKET_FLAGS, add_market_flags
from auctioneer.watch import watch
from protocol.cli import UsageError

console = Console()

PROMPT = "Mechanism Design for"
DEMO_SEED = hashlib.sha256(b"token-auction demo").hexdigest()
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
DEFAULTS = {"seed": DEMO_SEED, "max_tokens": 12, "stop_token": ".", "round_timeout": 2.0, "round_pause": 0.5}


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("demo", help="run the article's market live on loopback", description=__doc__)
    parser.add_argument("--db", type=Path, help="keep the ledger here (default: a temporary file)")
    add_market_flags(parser)
    parser.set_defaults(run=run)


def serve_arguments(args: argparse.Namespace) -> list[str]:
    flags = ["--prompt", PROMPT, "--min-agents", str(len(AGENTS))]
    for name in MARKET_FLAGS:
        value = getattr(args, name, None)
        value = DEFAULTS.get(name) if value is None else value
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="token-auction-demo-") as scratch:
        db = args.db or Path(scratch) / "demo.db"
        if db.exists():
            raise UsageError(f"{db} already exists; the demo starts a new market (pick another --db)")
        market = LocalMarket()
        market.start_auctioneer(db, serve_arguments(args), Path(scratch) / "auctioneer.log")
        for name, agent_args in AGENTS.items():
            market.start_agent(name, agent_args, Path(scratch) / f"{name}.log")
        console.print(
            f"[bold]token-auction demo[/bold]: auctioneer on {market.market} / {market.feed}, "
            f"agents {', '.join(AGENTS)}"
        )
        view = MarketView()
        try:
            with Live(view.render(), console=console, refresh_per_second=8) as live:
                asyncio.run(asyncio.wait_for(watch(market.market, market.feed, view, live), timeout=300))
            console.print()
            codes = market.wait(timeout=30)
        finally:
            market.stop()
        if any(codes):
            logs = "\n".join((Path(scratch) / f"{n}.log").read_text() for n in ["auctioneer", *AGENTS])
            console.print(logs)
            raise UsageError(f"a market process failed (exit codes {codes})")
        with open_existing(db) as ledger:
            document = ledger_document(ledger)
    first = document["rounds"][0]["distribution"] if document["rounds"] else {}
    console.print(f"round 1 aggregate: {', '.join(f'{t!r} {p:.2f}' for t, p in sorted(first.items()))}")
    for table in ledger_tables(document):
        console.print(table)
    console.print(f"[bold]final text:[/bold] {document['text']}")
    return 0

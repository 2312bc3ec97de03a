"""Running a scenario as a live market: an auctioneer process and one process per agent, on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from auctioneer.live_view import MarketView
from auctioneer.processes import LocalMarket
from auctioneer.settings import MarketSettings
from auctioneer.watch import watch
from protocol.cli import UsageError
from protocol.client import FeedEvent
from protocol.messages import RoundResult


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def settings_toml(settings: MarketSettings) -> str:
    """The settings as a config file for ``auctioneer serve`` (TOML)."""
    scalars, tables = [], []
    for key, value in settings.model_dump(mode="json", exclude={"market", "feed", "db"}).items():
        if value is None:
            continue
        if isinstance(value, dict):
            rows = "\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
            tables.append(f"[{key}]\n{rows}\n")
        else:
            scalars.append(f"{key} = {toml_value(value)}")
    return "\n".join(scalars) + "\n\n" + "\n".join(tables)


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


def run_networked(
    scenario_file: Path, settings: MarketSettings, agents: list[str], seed: int, out: Path, console: Console
) -> None:
    """Serve the market and run every agent as its own process; show the market live until it closes."""
    config = out / "market.toml"
    config.write_text(settings_toml(settings))
    market = LocalMarket()
    market.start_auctioneer(settings.db, ["--config", str(config)], out / "auctioneer.log")
    for name in agents:
        market.start_agent(
            name, ["--scenario", str(scenario_file), "--scenario-seed", str(seed)], out / f"agent-{name}.log"
        )
    view = FollowView(settings.max_tokens)
    try:
        with Live(view.render(), console=console, refresh_per_second=8) as live:
            asyncio.run(asyncio.wait_for(watch(market.market, market.feed, view, live), timeout=3600))
        codes = market.wait(timeout=60)
    finally:
        market.stop()
    if any(codes):
        raise UsageError(f"a market process failed (exit codes {codes}); see the logs in {out}")

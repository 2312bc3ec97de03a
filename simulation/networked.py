"""Running a scenario as a live market: an auctioneer process and one process per agent, on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from auctioneer.settings import ServeSettings
from protocol.client import FeedEvent, follow_market
from protocol.errors import UserError
from simulation.processes import LocalMarket

MARKET_TIMEOUT = 3600.0


class SimulationFailed(UserError, RuntimeError):
    """A process of a live simulation failed; the message says where its logs are."""


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return json.dumps(str(value))


def settings_toml(settings: ServeSettings) -> str:
    """The settings given (not the defaults) as a config file for ``auctioneer serve`` (TOML)."""
    scalars, tables = [], []
    given = settings.model_dump(mode="json", exclude_unset=True, exclude={"market", "feed", "db", "markets"})
    for key, value in given.items():
        if value is None:
            continue
        if isinstance(value, dict):
            rows = "\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
            tables.append(f"[{key}]\n{rows}\n")
        else:
            scalars.append(f"{key} = {toml_value(value)}")
    return "\n".join(scalars) + "\n\n" + "\n".join(tables)


def run_networked(
    scenario_file: Path,
    settings: ServeSettings,
    agents: list[str],
    seed: int,
    out: Path,
    on_event: Callable[[FeedEvent], None],
) -> None:
    """Serve the market and run every agent as its own process; ``on_event`` sees the market until it closes."""
    config = out / "market.toml"
    config.write_text(settings_toml(settings))
    market = LocalMarket()
    market.start_auctioneer(settings.db, ["--config", str(config)], out / "auctioneer.log")
    for name in agents:
        market.start_agent(
            name, ["--scenario", str(scenario_file), "--scenario-seed", str(seed)], out / f"agent-{name}.log"
        )
    try:
        asyncio.run(asyncio.wait_for(follow_market(None, market.market, market.feed, on_event), MARKET_TIMEOUT))
        codes = market.wait(timeout=60)
    finally:
        market.stop()
    if any(codes):
        raise SimulationFailed(f"a market process failed (exit codes {codes}); see the logs in {out}")

"""Running an ad-exchange scenario: queries arriving at a rate, each its own market, shared budgets.

In-process, the real :class:`Exchange` runs on a simulated clock: queries open their markets at
their arrival times and every round closes as soon as every advertiser bid. Live, an exchange
process and one process per advertiser run on loopback, and this module is the operator: it
opens each query's market at its arrival time (an ``open_market`` request) and waits for the
last one to close.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import zmq.asyncio

from agent_client.scenario import build_agent
from auctioneer.exchange import Exchange
from auctioneer.ledger import Ledger
from auctioneer.settings import MarketSpec, ServeSettings
from protocol.client import MarketClient, list_markets
from protocol.messages import Error, Hello, OpenMarket
from simulation.in_process import InProcessAgent, SimulatedClock, drive
from simulation.networked import SimulationFailed, settings_toml
from simulation.processes import LocalMarket
from simulation.scenario import Arrival, Scenario

log = logging.getLogger(__name__)
POLL = 0.2
CLOSE_TIMEOUT = 600.0


def query_settings(arrival: Arrival) -> dict[str, object]:
    """The settings a query's market takes over the exchange's defaults."""
    return {"prompt": arrival.prompt, "max_tokens": arrival.tokens}


def run_exchange_in_process(
    scenario: Scenario, db: Path, seed: int, progress: Callable[[int], object] | None = None
) -> Path:
    """Run every query's market to its end on a simulated clock with a run's ``seed``, writing the ledger
    to ``db`` (the same queries, markets and agents as a live run with that seed)."""
    assert scenario.exchange is not None
    pending = scenario.exchange.arrivals(seed)
    clock = SimulatedClock()
    with Ledger(db, durable=False) as ledger:
        exchange = Exchange(scenario.settings(db, seed), ledger, clock)
        expected = scenario.expected_rounds()
        agents = [InProcessAgent(s.name, build_agent(s, expected, seed)) for s in scenario.agents]
        for agent in agents:
            exchange.handle(agent.peer, Hello(name=agent.name))

        def open_arrived() -> None:
            while pending and pending[0].at <= clock.now:
                arrival = pending.pop(0)
                exchange.open_market(MarketSpec(settings=query_settings(arrival), id=arrival.market))

        drive(
            exchange,
            agents,
            clock,
            progress,
            until=lambda: not pending and not exchange.markets,
            before_tick=open_arrived,
            next_event=lambda: pending[0].at if pending else math.inf,
        )
    return db


def run_exchange_networked(
    scenario_file: Path,
    scenario: Scenario,
    settings: ServeSettings,
    seed: int,
    out: Path,
    progress: Callable[[int, int], object] | None = None,
) -> None:
    """Serve an empty exchange, run every advertiser as its own process, open each query's market at its
    arrival time, and stop everything once the last market closed (``progress(opened, closed)``)."""
    assert scenario.exchange is not None
    config = out / "exchange.toml"
    config.write_text(settings_toml(settings))
    processes = LocalMarket()
    processes.start_auctioneer(settings.db, ["--config", str(config)], out / "auctioneer.log")
    for spec in scenario.agents:
        processes.start_agent(
            spec.name,
            ["--stay", "--scenario", str(scenario_file), "--scenario-seed", str(seed)],
            out / f"agent-{spec.name}.log",
        )
    try:
        asyncio.run(operate(processes.market, scenario.exchange.arrivals(seed), progress))
    finally:
        processes.stop()
    failed = [code for code in processes.wait(timeout=30) if code not in (0, -15)]
    if failed:
        raise SimulationFailed(f"a process failed (exit codes {failed}); see the logs in {out}")


async def operate(endpoint: str, arrivals: list[Arrival], progress: Callable[[int, int], object] | None) -> None:
    """Open each query's market at its arrival time; return once every market has closed."""
    context = zmq.asyncio.Context()
    client = MarketClient(context, endpoint)
    client.connect()
    try:
        started = time.monotonic()
        for opened, arrival in enumerate(arrivals, start=1):
            await asyncio.sleep(max(arrival.at - (time.monotonic() - started), 0.0))
            request = OpenMarket(settings=query_settings(arrival), market=arrival.market)
            reply = await client.request(request, 30.0)
            if isinstance(reply, Error):
                raise SimulationFailed(f"the exchange refused query {arrival.market}: {reply.code}: {reply.message}")
            if progress is not None:
                progress(opened, 0)
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while time.monotonic() < deadline:
            listing = await list_markets(client)
            still_open = sum(1 for status in listing.markets if status.closed is None)
            if progress is not None:
                progress(len(arrivals), len(arrivals) - still_open)
            if not still_open:
                return
            await asyncio.sleep(POLL)
        raise SimulationFailed(f"the markets did not all close within {CLOSE_TIMEOUT:g}s")
    finally:
        client.close()
        context.term()

"""Agent runtimes in an exchange: what the agents' side costs, against the load driver, same run.

An advertiser's agent takes part in every market of an exchange at once. A real ``auctioneer serve``
opens ``M`` markets of 3 agents at start, and three real ``agent-client`` processes (static agents
bidding 8 tokens, with every check and verification the runtime makes) trade in all of them. The
baseline is the same exchange traded by the load driver (``drive_exchange``: one process bidding for
the three agents with bids encoded once, checking nothing). Both rates are committed rounds per
second between the ledger's first and last commit. An agent process's CPU per market-round is the
difference between its CPU in a run of ``R`` rounds and in one of ``3R``, over the difference in
rounds, so start-up cancels out. The runs are interleaved ``repeats`` times; each figure is the
median, the ratio the median of each repeat's pair.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import psutil

from auctioneer.ledger import Ledger
from benchmarks.exchange import AGENTS, SERVE_FLAGS, exchange_config, wait_until_serving
from benchmarks.load import drive_exchange
from benchmarks.timing import Figure
from simulation.processes import LocalMarket

SUPPORT = 8
DISTRIBUTION = ", ".join(f" w{k}={1 / SUPPORT}" for k in range(SUPPORT))
LONGER = 3
SAMPLE_EVERY = 0.05  # seconds between readings of the agents' CPU time


def start_exchange(markets: int, rounds: int, scratch: Path, name: str) -> tuple[LocalMarket, Path]:
    db = scratch / f"{name}.db"
    market = LocalMarket()
    config = exchange_config(scratch / f"{name}.toml", markets, rounds)
    market.start_auctioneer(db, ["--config", str(config), *SERVE_FLAGS])
    wait_until_serving(market)
    return market, db


def with_agent_processes(markets: int, rounds: int, scratch: Path, name: str) -> tuple[float, int, float]:
    """Committed rounds/s, rounds committed, and the agent processes' CPU seconds (median agent)."""
    market, db = start_exchange(markets, rounds, scratch, name)
    try:
        for k in range(AGENTS):
            market.start_agent(f"agent{k}", ["--distribution", DISTRIBUTION, "--bid", "1"])
        agents = [psutil.Process(process.pid) for process in market.processes[1:]]
        cpu = dict.fromkeys(agent.pid for agent in agents)
        # An exited process can no longer be asked: read each one's CPU time until it ends.
        while any(process.poll() is None for process in market.processes[1:]):
            for agent in agents:
                try:
                    times = agent.cpu_times()
                except psutil.Error:
                    continue
                cpu[agent.pid] = times.user + times.system
            time.sleep(SAMPLE_EVERY)
        codes = market.wait(timeout=120)
    finally:
        market.stop()
    if codes[1:] != [0] * AGENTS:
        raise RuntimeError(f"the agent processes did not finish cleanly: exit codes {codes[1:]}")
    with Ledger.open_existing(db) as ledger:
        return ledger.commit_rate(), ledger.round_count(), statistics.median(value or 0.0 for value in cpu.values())


def with_driver(markets: int, rounds: int, scratch: Path, name: str) -> float:
    market, db = start_exchange(markets, rounds, scratch, name)
    try:
        drive_exchange(market.market, market.feed, AGENTS, SUPPORT, markets * rounds)
    finally:
        market.stop()
    with Ledger.open_existing(db) as ledger:
        return ledger.commit_rate()


def run(quick: bool = False) -> list[Figure]:
    markets, rounds, repeats = (100, 5, 1) if quick else (300, 10, 3)
    tag = f"m{markets}_n{AGENTS}"
    agent_rates, ratios, cpu_per_round = [], [], []
    with tempfile.TemporaryDirectory(prefix="token-auction-agents-") as directory:
        scratch = Path(directory)
        for k in range(repeats):
            _, short_rounds, short_cpu = with_agent_processes(markets, rounds, scratch, f"short-{k}")
            rate, long_rounds, long_cpu = with_agent_processes(markets, LONGER * rounds, scratch, f"agents-{k}")
            driver = with_driver(markets, LONGER * rounds, scratch, f"driver-{k}")
            agent_rates.append(rate)
            ratios.append(rate / driver)
            cpu_per_round.append((long_cpu - short_cpu) / (long_rounds - short_rounds))

    def figure(key: str, label: str, value: float, unit: str) -> Figure:
        return Figure("agents", key, label, value, unit)

    rate, ratio = statistics.median(agent_rates), statistics.median(ratios)
    cpu = statistics.median(cpu_per_round) * 1e6
    return [
        figure(f"agent_processes_rounds_per_s_{tag}", f"committed rounds/s, {markets} markets, agents", rate, "/s"),
        figure(f"agent_processes_over_driver_{tag}", "agent processes over the load driver", ratio, "x"),
        figure(f"agent_cpu_us_per_market_round_{tag}", "an agent process's CPU per market-round", cpu, "us"),
    ]

"""Exchange benchmark: many concurrent markets in one auctioneer against one market, same driver, same run.

A real ``auctioneer serve`` opens ``M`` markets of 3 agents at start; the driver (``drive_exchange``)
bids in every round of every market as it opens. Committed rounds per second across the markets is
compared with one market of 3 agents driven the same way (the single market pays one fsync'd commit
per round; the exchange groups the rounds that close together). Also: fsyncs per committed round
(from the ledger's commit count), lost messages, latency from a round's last acknowledgement to its
result, and the auctioneer's memory per open market (its peak resident memory during the run over
that of an empty exchange). The runs are interleaved ``repeats`` times and each figure is the median;
the ratio is the median of each exchange run over the single-market run right after it (this VM's
speed drifts by a quarter within a minute, and neighbouring runs drift alike).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import zmq.asyncio

from auctioneer.ledger import Ledger
from benchmarks.load import ExchangeLoad, drive_exchange
from benchmarks.timing import Figure
from protocol.client import MarketClient, list_markets
from simulation.processes import LocalMarket

AGENTS = 3
SINGLE_ROUNDS = 400
SERVE_FLAGS = ["--min-agents", str(AGENTS), "--round-timeout", "60", "--heartbeat", "5"]


def exchange_config(path: Path, markets: int, rounds: int) -> Path:
    path.write_text(
        f"max_tokens = {rounds}\n" + "".join(f'[[markets]]\nid = "m{k:05d}"\nprompt = ""\n' for k in range(markets))
    )
    return path


def wait_until_serving(market: LocalMarket, timeout: float = 120.0) -> None:
    """Return once the auctioneer answers on its market socket (its markets are opened by then)."""

    async def ask_until_answered() -> None:
        context = zmq.asyncio.Context()
        client = MarketClient(context, market.market)
        client.connect()
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    await list_markets(client, 1.0)
                    return
                except (TimeoutError, ConnectionResetError):
                    if time.monotonic() > deadline:
                        raise
        finally:
            client.close()
            context.term()

    asyncio.run(ask_until_answered())


def empty_exchange_rss(scratch: Path) -> int:
    """Resident memory of an exchange with no market (imports and sockets only)."""
    market = LocalMarket()
    market.start_auctioneer(scratch / "empty.db", ["--stay", *SERVE_FLAGS])
    try:
        wait_until_serving(market)
        return int(psutil.Process(market.processes[0].pid).memory_info().rss)
    finally:
        market.stop()


def run_exchange(markets: int, rounds: int, scratch: Path, run: int) -> tuple[ExchangeLoad, float]:
    """One run of ``markets`` markets of ``rounds`` rounds: the driver's figures and fsyncs per round."""
    db = scratch / f"exchange-{markets}-{run}.db"
    config = exchange_config(scratch / f"exchange-{markets}-{run}.toml", markets, rounds)
    market = LocalMarket()
    market.start_auctioneer(db, ["--config", str(config), *SERVE_FLAGS])
    try:
        wait_until_serving(market)
        load = drive_exchange(market.market, market.feed, AGENTS, 8, markets * rounds, pid=market.processes[0].pid)
    finally:
        market.stop()
    with Ledger.open_existing(db) as ledger:
        committed = sum(m.last_round for m in ledger.markets())
        fsyncs = ledger.commits() / committed if committed else float("nan")
    return load, fsyncs


def run_single(rounds: int, scratch: Path, run: int) -> ExchangeLoad:
    market = LocalMarket()
    market.start_auctioneer(scratch / f"single-{run}.db", ["--prompt", "", "--max-tokens", str(rounds), *SERVE_FLAGS])
    try:
        wait_until_serving(market)
        return drive_exchange(market.market, market.feed, AGENTS, 8, rounds)
    finally:
        market.stop()


def rate(load: ExchangeLoad) -> float:
    return load.rounds / load.seconds if load.seconds > 0 and load.rounds else float("nan")


def run(quick: bool = False) -> list[Figure]:
    markets, rounds, repeats = (200, 3, 1) if quick else (1000, 5, 5)
    tag = f"m{markets}_n{AGENTS}"
    with tempfile.TemporaryDirectory(prefix="token-auction-exchange-") as directory:
        scratch = Path(directory)
        baseline = empty_exchange_rss(scratch)
        exchanges, fsyncs, singles = [], [], []
        for k in range(repeats):
            load, per_round = run_exchange(markets, rounds, scratch, k)
            exchanges.append(load)
            fsyncs.append(per_round)
            singles.append(run_single(SINGLE_ROUNDS // (2 if quick else 1), scratch, k))
    exchange_rate = statistics.median(rate(load) for load in exchanges)
    single_rate = statistics.median(rate(load) for load in singles)
    paired = statistics.median(rate(load) / rate(single) for load, single in zip(exchanges, singles, strict=True))
    typical = sorted(exchanges, key=rate)[len(exchanges) // 2]
    lost = sum(load.lost_messages for load in [*exchanges, *singles])
    peak = max(load.peak_rss for load in exchanges)
    per_market = (peak - baseline) / markets / 1024

    def figure(key: str, label: str, value: float, unit: str) -> Figure:
        return Figure("exchange", key, label, value, unit)

    return [
        figure(f"exchange_rounds_per_s_{tag}", f"committed rounds/s, {markets} markets of 3", exchange_rate, "/s"),
        figure(f"single_rounds_per_s_n{AGENTS}", "committed rounds/s, one market of 3", single_rate, "/s"),
        figure(f"exchange_over_single_{tag}", f"{markets} markets over one market", paired, "x"),
        figure(f"fsyncs_per_round_m{markets}", "fsyncs per committed round", statistics.median(fsyncs), ""),
        figure(f"exchange_p50_ms_{tag}", "p50 last ack -> result", typical.percentile(50) * 1e3, "ms"),
        figure(f"exchange_p99_ms_{tag}", "p99 last ack -> result", typical.percentile(99) * 1e3, "ms"),
        figure(f"memory_per_market_kib_m{markets}", "auctioneer memory per open market", per_market, "KiB"),
        figure(f"lost_messages_exchange_{tag}", "lost acks + results, all runs", lost, ""),
    ]

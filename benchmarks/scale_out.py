"""Scale-out benchmark: the exchange on PostgreSQL, on one shard and on two, against SQLite, and the
time a failover takes. A real PostgreSQL server (``simulation.postgres_server``) for the run.

- ``exchange_pg_over_sqlite_m1000_n3``: committed rounds per second of one shard on PostgreSQL over
  one process on SQLite, the same load as the exchange section (M markets of 3 agents, the driver
  bidding in every round as it opens), interleaved, medians;
- ``shards2_over_1_m1000_n3``: two shards (half the markets each, each driven by a driver process of
  its own) over one shard, both on PostgreSQL; with the machine's core count, and per shard the CPU
  microseconds per committed round and PostgreSQL's WAL flushes per committed round (``pg_stat_wal``);
- ``failover_resume_s``: from ``kill -9`` of a shard to the first committed round of one of its
  markets on the other shard (real agent processes find it there), median of the repeats, with the
  lease time it is held to (twice it at most).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg

from benchmarks.exchange import AGENTS, SERVE_FLAGS, exchange_config, rate, run_exchange, wait_until_serving
from benchmarks.load import ExchangeLoad, drive_exchange
from benchmarks.timing import Figure
from simulation.postgres_server import PostgresServer
from simulation.processes import LocalMarket

LEASE_SECONDS = 2.0


def scalar(url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    """The one value ``query`` selects."""
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def wal_syncs(url: str) -> int:
    return int(scalar(url, "SELECT wal_sync FROM pg_stat_wal"))


def committed(url: str) -> int:
    return int(scalar(url, "SELECT COUNT(*) FROM rounds"))


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _drive(queue: Any, market: str, feed: str, rounds: int, names: str) -> None:
    queue.put(drive_exchange(market, feed, AGENTS, 8, rounds, names=names))


def machine_us_per_round(load: ExchangeLoad) -> float:
    """The whole machine's CPU per committed round while ``load`` ran (every process: the exchange,
    the driver, PostgreSQL)."""
    return load.machine_cpu_seconds / load.rounds * 1e6 if load.rounds else float("nan")


def run_shards(
    server: PostgresServer, shards: int, markets: int, rounds: int, scratch: Path, run: int
) -> dict[str, Any]:
    """One run of ``markets`` markets split over ``shards`` shards on a new database: the rate across
    them, each shard's CPU per committed round, WAL flushes per committed round."""
    url = server.create_database(f"bench_{shards}_{run}_{os.getpid()}")
    share = markets // shards
    exchanges = []
    for k in range(shards):
        config = exchange_config(scratch / f"shard{k}-{run}.toml", share, rounds)
        text = config.read_text().replace('id = "m', f'id = "s{k}m')
        config.write_text(text)
        exchange = LocalMarket()
        exchange.start_auctioneer(url, ["--config", str(config), "--shard", f"s{k}", *SERVE_FLAGS])
        exchanges.append(exchange)
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    try:
        for exchange in exchanges:
            wait_until_serving(exchange)
        walls, cpus = wal_syncs(url), [cpu_seconds(e.processes[0].pid) for e in exchanges]
        drivers = [
            spawn.Process(target=_drive, args=(queue, e.market, e.feed, share * rounds, f"d{k}x"))
            for k, e in enumerate(exchanges)
        ]
        started = time.perf_counter()
        for driver in drivers:
            driver.start()
        loads: list[ExchangeLoad] = [queue.get(timeout=600) for _ in drivers]
        for driver in drivers:
            driver.join(60)
        spent = [cpu_seconds(e.processes[0].pid) - before for e, before in zip(exchanges, cpus, strict=True)]
        flushes = wal_syncs(url) - walls
        total = committed(url)
    finally:
        for exchange in exchanges:
            exchange.stop()
    seconds = max(load.seconds for load in loads)
    rounds_done = sum(load.rounds for load in loads)
    return {
        "rate": rounds_done / seconds if seconds > 0 else float("nan"),
        "cpu_us_per_round": statistics.mean(
            s / max(load.rounds, 1) * 1e6 for s, load in zip(spent, loads, strict=True)
        ),
        "wal_per_round": flushes / total if total else float("nan"),
        "lost": sum(load.lost_messages for load in loads),
        "machine_us_per_round": machine_us_per_round(loads[0]),
        "wall": time.perf_counter() - started,
    }


def failover_seconds(server: PostgresServer, scratch: Path, run: int) -> float:
    """``kill -9`` of a shard serving markets real agents trade in: seconds to the first round one of
    its markets commits on the other shard."""
    url = server.create_database(f"failover_{run}_{os.getpid()}")
    shards = [LocalMarket(), LocalMarket()]
    flags = ["--stay", "--heartbeat", "0.5", "--round-timeout", "2", "--lease-seconds", str(LEASE_SECONDS)]
    for k, shard in enumerate(shards):
        shard.start_auctioneer(url, ["--shard", f"s{k}", *flags], scratch / f"failover-s{k}-{run}.log")
    agents = LocalMarket(market=shards[0].market, feed=shards[0].feed)
    try:
        for shard in shards:
            wait_until_serving(shard)
        for k in range(4):
            market_flags = ["--id", f"f{k}", "--prompt", "", "--max-tokens", "10000", "--round-pause", "0.05"]
            opener = [sys.executable, "-m", "auctioneer", "market", "open", "--exchange", shards[0].market]
            psutil.Popen([*opener, *market_flags, "--shard", f"s{k % 2}"]).wait(60)
        for name in ("a", "b"):
            agents.start_agent(name, ["--distribution", f"{name}=1", "--bid", "1", "--stay"])
        moved = ["f1", "f3"]
        deadline = time.monotonic() + 60
        while min(rounds_of(url, market) for market in moved) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        shards[1].processes[0].send_signal(signal.SIGKILL)
        killed = time.time()
        while time.monotonic() < deadline + 60:
            query = "SELECT MIN(committed_at) FROM rounds WHERE market = ANY(%s) AND committed_at > %s"
            first = scalar(url, query, (moved, killed))
            if first is not None:
                return float(first) - killed
            time.sleep(0.05)
        return float("nan")
    finally:
        agents.stop()
        for shard in shards:
            shard.stop()


def rounds_of(url: str, market: str) -> int:
    return int(scalar(url, "SELECT COUNT(*) FROM rounds WHERE market = %s", (market,)))


def run(quick: bool = False) -> list[Figure]:
    markets, rounds, repeats = (200, 3, 1) if quick else (1000, 5, 3)
    tag = f"m{markets}_n{AGENTS}"
    with tempfile.TemporaryDirectory(prefix="token-auction-scale-out-") as directory, PostgresServer() as server:
        scratch = Path(directory)
        sqlite_loads: list[ExchangeLoad] = []
        sqlite, one, two, failovers = [], [], [], []
        for k in range(repeats):
            sqlite_loads.append(run_exchange(markets, rounds, scratch, k)[0])
            sqlite.append(rate(sqlite_loads[-1]))
            one.append(run_shards(server, 1, markets, rounds, scratch, k))
            two.append(run_shards(server, 2, markets, rounds, scratch, k))
            failovers.append(failover_seconds(server, scratch, k))
    pg_rate = statistics.median(r["rate"] for r in one)
    pair_rate = statistics.median(r["rate"] for r in two)

    def figure(key: str, label: str, value: float, unit: str) -> Figure:
        return Figure("scale-out", key, label, value, unit)

    return [
        figure(f"exchange_pg_rounds_per_s_{tag}", "committed rounds/s, one shard on PostgreSQL", pg_rate, "/s"),
        figure(
            f"exchange_sqlite_rounds_per_s_{tag}",
            "committed rounds/s, one process on SQLite",
            statistics.median(sqlite),
            "/s",
        ),
        figure(
            f"exchange_pg_over_sqlite_{tag}",
            "PostgreSQL over SQLite, one process",
            statistics.median(r["rate"] / s for r, s in zip(one, sqlite, strict=True)),
            "x",
        ),
        figure(
            f"machine_cpu_us_per_round_sqlite_{tag}",
            "machine CPU per committed round, SQLite (all processes)",
            statistics.median(machine_us_per_round(load) for load in sqlite_loads),
            "us",
        ),
        figure(
            f"machine_cpu_us_per_round_pg_{tag}",
            "machine CPU per committed round, one shard on PostgreSQL",
            statistics.median(r["machine_us_per_round"] for r in one),
            "us",
        ),
        figure(f"shards2_rounds_per_s_{tag}", "committed rounds/s, two shards on PostgreSQL", pair_rate, "/s"),
        figure(
            f"shards2_over_1_{tag}",
            f"two shards over one ({os.cpu_count()} cores)",
            statistics.median(p["rate"] / o["rate"] for p, o in zip(two, one, strict=True)),
            "x",
        ),
        figure("cores", "cores on this machine", float(os.cpu_count() or 0), ""),
        figure(
            f"cpu_us_per_round_shard_{tag}",
            "a shard's CPU per committed round (two shards)",
            statistics.median(r["cpu_us_per_round"] for r in two),
            "us",
        ),
        figure(
            f"wal_flushes_per_round_{tag}",
            "PostgreSQL WAL flushes per committed round (two shards)",
            statistics.median(r["wal_per_round"] for r in two),
            "",
        ),
        figure(
            f"lost_messages_scale_out_{tag}", "lost acks + results, all runs", sum(r["lost"] for r in [*one, *two]), ""
        ),
        figure(
            "failover_resume_s",
            f"kill -9 to a moved market's first round (lease {LEASE_SECONDS:g} s)",
            statistics.median(failovers),
            "s",
        ),
    ]

"""Market benchmark: a real auctioneer process against the bare-pyzmq floor, driven by the same load.

For each (agents N, support K): rounds per second and p50/p99 latency from the last bid's
acknowledgement (the round can close) to the result arriving, for the real market and for three
baselines (``benchmarks/floor.py``: same sockets, message counts and sizes): the **floor** does
nothing else, the **validated floor** also decodes every bid through ``protocol.decode``, the
**durable floor** decodes every bid with the compiled decoder and commits each round's bids to
SQLite in one fsync'd transaction. Market over floor is what the market's own work costs; validated
floor over floor is the share of it that is the protocol's per-bid validation; market over durable
floor is what the market costs beyond what any durable market must do. The four run interleaved
``repeats`` times and each figure is the median, so a noisy machine moves them all alike.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.load import MANY_MACHINES, LoadResult, drive
from benchmarks.timing import Figure
from protocol.sockets import free_tcp_endpoint
from simulation.processes import LocalMarket

FULL = [(3, 2), (3, 64), (3, 1024), (100, 2), (100, 64), (100, 1024), (1000, 2), (1000, 64), (1000, 1024)]
QUICK = [(3, 2), (100, 64), (1000, 64)]


def rounds_for(agents: int, support: int, quick: bool) -> int:
    work = agents * max(support, 16)
    rounds = 400 if work < 1000 else 100 if work < 20_000 else 30 if work < 200_000 else 8
    return max(rounds // 2, 5) if quick else rounds


def run_market(agents: int, support: int, rounds: int, scratch: Path) -> LoadResult:
    scratch.mkdir(parents=True, exist_ok=True)
    market = LocalMarket()
    market.start_auctioneer(
        scratch / f"market-{agents}-{support}.db",
        [
            "--prompt",
            "",
            "--min-agents",
            str(agents),
            "--max-tokens",
            str(rounds),
            "--round-timeout",
            "60",
            "--heartbeat",
            "5",
            *MANY_MACHINES,
        ],
    )
    try:
        return drive(market.market, market.feed, agents, support, rounds)
    finally:
        market.stop()


def run_floor(
    agents: int, support: int, rounds: int, result_bytes: int, validate: bool = False, durable: Path | None = None
) -> LoadResult:
    market, feed = free_tcp_endpoint(), free_tcp_endpoint()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.floor",
            "--market",
            market,
            "--feed",
            feed,
            "--agents",
            str(agents),
            "--rounds",
            str(rounds),
            "--result-bytes",
            str(result_bytes),
            *(["--validate"] if validate else []),
            *(["--durable", str(durable)] if durable is not None else []),
        ],
    )
    try:
        return drive(market, feed, agents, support, rounds, can_sync=False)
    finally:
        server.kill()
        server.wait(30)


def per_round(result: LoadResult) -> float:
    """Seconds per round; NaN for a run that completed none (it shows in the table, never as a number)."""
    return result.seconds / result.rounds if result.rounds else float("nan")


def median_run(runs: list[LoadResult]) -> LoadResult:
    """The completed run with the median time per round (the upper median for an even count)."""
    completed = sorted((r for r in runs if r.rounds), key=per_round)
    return completed[len(completed) // 2] if completed else runs[0]


def measure(agents: int, support: int, rounds: int, repeats: int, scratch: Path) -> dict[str, list[LoadResult]]:
    """Market, floor and validated floor, interleaved ``repeats`` times (each market on a fresh ledger)."""
    runs: dict[str, list[LoadResult]] = {"market": [], "floor": [], "validated": [], "durable": []}
    for repeat in range(repeats):
        real = run_market(agents, support, rounds, scratch / str(repeat))
        runs["market"].append(real)
        done = real.rounds or rounds
        runs["floor"].append(run_floor(agents, support, done, real.result_bytes))
        runs["validated"].append(run_floor(agents, support, done, real.result_bytes, validate=True))
        durable = scratch / str(repeat) / "durable-floor.db"
        runs["durable"].append(run_floor(agents, support, done, real.result_bytes, durable=durable))
    return runs


def run(quick: bool = False) -> list[Figure]:
    figures = []
    lost_at_1000 = asked = 0
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="token-auction-bench-") as scratch:
        for agents, support in QUICK if quick else FULL:
            rounds = rounds_for(agents, support, quick)
            directory = Path(scratch) / f"n{agents}-k{support}"
            runs = measure(agents, support, rounds, repeats, directory)
            real, floor, validated, durable = (
                median_run(runs[kind]) for kind in ("market", "floor", "validated", "durable")
            )
            lost = sum(r.lost_messages + (rounds - r.rounds) for r in runs["market"])
            if agents == 1000:
                lost_at_1000 += lost
            asked += sum(r.asked_first_round for r in runs["market"])
            tag, size = f"n{agents}_k{support}", f"N={agents} K={support}"
            figures += market_figures(tag, size, real, floor, validated, durable, lost)
    figures.append(Figure("market", "lost_messages_n1000", "lost messages, all N=1000 runs", lost_at_1000, ""))
    figures.append(Figure("market", "first_round_asked", "market runs that asked for their first round", asked, ""))
    return figures


def market_figures(
    tag: str, size: str, real: LoadResult, floor: LoadResult, validated: LoadResult, durable: LoadResult, lost: int
) -> list[Figure]:
    """Throughput, latency, the time-per-round ratios and lost messages of one (N, K)."""

    def figure(key: str, label: str, value: float, unit: str) -> Figure:
        return Figure("market", f"{key}_{tag}", f"{label}, {size}", value, unit)

    return [
        figure("market_rounds_per_s", "market rounds/s", 1 / per_round(real), "/s"),
        figure("market_p50_ms", "market p50 close->result", real.percentile(50) * 1e3, "ms"),
        figure("market_p99_ms", "market p99 close->result", real.percentile(99) * 1e3, "ms"),
        figure("floor_rounds_per_s", "floor rounds/s", 1 / per_round(floor), "/s"),
        figure("floor_p99_ms", "floor p99 close->result", floor.percentile(99) * 1e3, "ms"),
        figure("validated_floor_rounds_per_s", "validated floor rounds/s", 1 / per_round(validated), "/s"),
        figure("durable_floor_rounds_per_s", "durable floor rounds/s", 1 / per_round(durable), "/s"),
        figure(
            "market_over_durable_floor",
            "market/durable floor time per round",
            per_round(real) / per_round(durable),
            "x",
        ),
        figure("market_over_floor", "market/floor time per round", per_round(real) / per_round(floor), "x"),
        figure(
            "validated_over_floor", "validated floor/floor time per round", per_round(validated) / per_round(floor), "x"
        ),
        figure(
            "market_over_validated",
            "market/validated floor time per round",
            per_round(real) / per_round(validated),
            "x",
        ),
        figure("lost_messages", "lost acks + results", lost, ""),
    ]

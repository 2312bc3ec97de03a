"""Market benchmark: a real auctioneer process against the bare-pyzmq floor, driven by the same load.

For each (agents N, support K): rounds per second and p50/p99 latency from the last bid's
acknowledgement (the round can close) to the result arriving, for the real market and for the
floor (``benchmarks/floor.py``: same sockets, message counts and sizes; nothing else). The ratio
of time per round, market over floor, is what the market's own work costs.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from auctioneer.processes import LocalMarket
from benchmarks.load import LoadResult, drive
from benchmarks.timing import Figure
from protocol.sockets import free_tcp_endpoint

FULL = [(3, 2), (3, 64), (3, 1024), (100, 2), (100, 64), (100, 1024), (1000, 2), (1000, 64), (1000, 1024)]
QUICK = [(3, 2), (100, 64), (1000, 64)]


def rounds_for(agents: int, support: int, quick: bool) -> int:
    work = agents * max(support, 16)
    rounds = 400 if work < 1000 else 100 if work < 20_000 else 30 if work < 200_000 else 8
    return max(rounds // 2, 5) if quick else rounds


def run_market(agents: int, support: int, rounds: int, scratch: Path) -> LoadResult:
    market = LocalMarket()
    market.start_auctioneer(
        scratch / f"market-{agents}-{support}.db",
        ["--min-agents", str(agents), "--max-tokens", str(rounds), "--round-timeout", "60", "--heartbeat", "5"],
    )
    try:
        return drive(market.market, market.feed, agents, support, rounds)
    finally:
        market.stop()


def run_floor(agents: int, rounds: int, result_bytes: int) -> LoadResult:
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
        ],
    )
    try:
        return drive(market, feed, agents, 2, rounds)
    finally:
        server.kill()
        server.wait(30)


def run(quick: bool = False) -> list[Figure]:
    figures = []
    lost_at_1000 = 0
    with tempfile.TemporaryDirectory(prefix="token-auction-bench-") as scratch:
        for agents, support in QUICK if quick else FULL:
            rounds = rounds_for(agents, support, quick)
            real = run_market(agents, support, rounds, Path(scratch))
            floor = run_floor(agents, real.rounds or rounds, real.result_bytes)
            tag = f"n{agents}_k{support}"
            per_round_real = real.seconds / max(real.rounds, 1)
            per_round_floor = floor.seconds / max(floor.rounds, 1)
            lost = real.lost_acks + real.lost_results + (rounds - real.rounds)
            if agents == 1000:
                lost_at_1000 += lost
            figures += [
                Figure(
                    "market",
                    f"market_rounds_per_s_{tag}",
                    f"market rounds/s, N={agents} K={support}",
                    1 / per_round_real,
                    "/s",
                ),
                Figure(
                    "market",
                    f"market_p50_ms_{tag}",
                    f"market p50 close->result, N={agents} K={support}",
                    real.percentile(50) * 1e3,
                    "ms",
                ),
                Figure(
                    "market",
                    f"market_p99_ms_{tag}",
                    f"market p99 close->result, N={agents} K={support}",
                    real.percentile(99) * 1e3,
                    "ms",
                ),
                Figure(
                    "market",
                    f"floor_rounds_per_s_{tag}",
                    f"floor rounds/s, N={agents} K={support}",
                    1 / per_round_floor,
                    "/s",
                ),
                Figure(
                    "market",
                    f"floor_p99_ms_{tag}",
                    f"floor p99 close->result, N={agents} K={support}",
                    floor.percentile(99) * 1e3,
                    "ms",
                ),
                Figure(
                    "market",
                    f"market_over_floor_{tag}",
                    f"market/floor time per round, N={agents} K={support}",
                    per_round_real / per_round_floor,
                    "x",
                ),
                Figure("market", f"lost_messages_{tag}", f"lost acks + results, N={agents} K={support}", lost, ""),
            ]
    figures.append(Figure("market", "lost_messages_n1000", "lost messages, all N=1000 runs", lost_at_1000, ""))
    return figures

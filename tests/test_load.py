"""Load and soak: hundreds of agents over a few processes, every result and every ack accounted for.

The CI form runs 60 agents for 60 rounds; the full form of issue #4 (300 agents, 500 rounds) runs
with ``TOKEN_AUCTION_SOAK=full python -m pytest tests/test_load.py``.
"""

from __future__ import annotations

import os
import time

import psutil

from tests.helpers import MarketRun, committed_rounds, read_ledger

FULL = os.environ.get("TOKEN_AUCTION_SOAK") == "full"
AGENTS, ROUNDS, PROCESSES = (300, 500, 3) if FULL else (60, 60, 2)
WARM_UP = ROUNDS // 5


def test_many_agents_lose_nothing_and_memory_stays_flat(market_run: MarketRun) -> None:
    market_run.serve(
        "--min-agents", str(AGENTS), "--max-tokens", str(ROUNDS), "--round-timeout", "10", "--heartbeat", "1.0"
    )
    swarms = market_run.swarms(PROCESSES, AGENTS // PROCESSES)
    auctioneer = psutil.Process(market_run.processes[0].pid)
    warm_rss, peak_rss = 0, 0
    try:
        deadline = time.monotonic() + 600
        while market_run.processes[0].poll() is None and time.monotonic() < deadline:
            rounds = committed_rounds(market_run.db)
            try:
                rss = auctioneer.memory_info().rss
            except psutil.NoSuchProcess:
                break
            if rounds >= WARM_UP:
                warm_rss = warm_rss or rss
                peak_rss = max(peak_rss, rss)
            time.sleep(0.2)
        codes = [p.wait(120) for p in swarms]
    finally:
        for p in swarms:
            p.kill()
    assert market_run.processes[0].wait(30) == 0, market_run.logs()
    assert codes == [0] * PROCESSES, market_run.logs()[-4000:]
    ledger = read_ledger(market_run.db)
    rounds = ledger["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    assert all(len(r["bids"]) == AGENTS for r in rounds), "every agent's bid in every round"
    reports = market_run.swarm_reports(PROCESSES)
    assert len(reports) == AGENTS
    for report in reports:
        assert report["results"] == ROUNDS, f"{report['name']} lost results"
        assert report["statuses"] == {"accepted": ROUNDS}, f"{report['name']}: {report['statuses']}"
        assert report["verification_failures"] == 0
    growth = (peak_rss - warm_rss) / 2**20
    print(
        f"\nauctioneer RSS after warm-up {warm_rss / 2**20:.1f} MiB, peak {peak_rss / 2**20:.1f} MiB, "
        f"growth {growth:.1f} MiB over {ROUNDS - WARM_UP} rounds x {AGENTS} agents"
    )
    assert growth < 0.25 * warm_rss / 2**20

"""1000 agents in one market (reduced form: a few rounds); the benchmark runs the full load.

Every agent is a full runtime (registration, initial resync, heartbeats, feed following,
verification), 500 to a process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.market_harness import MarketRun, read_ledger

AGENTS, ROUNDS, PROCESSES = 1000, 3, 2


def test_a_thousand_agents_register_bid_and_hear_every_result(market_run: MarketRun, tmp_path: Path) -> None:
    market_run.serve(
        "--min-agents", str(AGENTS), "--max-tokens", str(ROUNDS), "--round-timeout", "30", "--heartbeat", "5"
    )
    swarms = []
    for i in range(PROCESSES):
        with open(tmp_path / f"swarm{i}.log", "wb") as log:
            swarms.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "agent_client.swarm",
                        "--market",
                        market_run.market,
                        "--feed",
                        market_run.feed,
                        "--count",
                        str(AGENTS // PROCESSES),
                        "--prefix",
                        f"s{i}x",
                        "--seed",
                        str(i),
                        "--support",
                        "4",
                        "--report-json",
                        str(tmp_path / f"swarm{i}.json"),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        codes = [p.wait(300) for p in swarms]
    finally:
        for p in swarms:
            p.kill()
    assert codes == [0] * PROCESSES, "\n".join(f.read_text()[-2000:] for f in tmp_path.glob("swarm*.log"))
    rounds = read_ledger(market_run.db)["rounds"]
    assert len(rounds) == ROUNDS and all(len(r["bids"]) == AGENTS for r in rounds)
    reports = [a for i in range(PROCESSES) for a in json.loads((tmp_path / f"swarm{i}.json").read_text())]
    assert len(reports) == AGENTS
    assert all(r["results"] == ROUNDS and r["statuses"] == {"accepted": ROUNDS} for r in reports)

"""1000 agents in one market (reduced form: a few rounds); the benchmark runs the full load.

Every agent is a full runtime (registration, initial resync, heartbeats, feed following,
verification), 500 to a process.
"""

from __future__ import annotations

from tests.helpers import MarketRun, read_ledger

AGENTS, ROUNDS, PROCESSES = 1000, 3, 2


def test_a_thousand_agents_register_bid_and_hear_every_result(market_run: MarketRun) -> None:
    market_run.serve(
        "--min-agents", str(AGENTS), "--max-tokens", str(ROUNDS), "--round-timeout", "30", "--heartbeat", "5"
    )
    swarms = market_run.swarms(PROCESSES, AGENTS // PROCESSES, "--support", "4")
    try:
        codes = [p.wait(300) for p in swarms]
    finally:
        for p in swarms:
            p.kill()
    assert codes == [0] * PROCESSES, market_run.logs()[-4000:]
    rounds = read_ledger(market_run.db)["rounds"]
    assert len(rounds) == ROUNDS and all(len(r["bids"]) == AGENTS for r in rounds)
    reports = market_run.swarm_reports(PROCESSES)
    assert len(reports) == AGENTS
    assert all(r["results"] == ROUNDS and r["statuses"] == {"accepted": ROUNDS} for r in reports)

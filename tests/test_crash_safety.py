"""SIGKILL the auctioneer at random moments, restart it on the same database, and check the ledger."""

from __future__ import annotations

import random
import signal
import time

import pytest

from tests.helpers import MarketRun, committed_rounds, read_ledger, run_cli, static_agent, wait_until

KILLS = 20


def test_random_sigkills_lose_nothing_and_charge_nobody_twice(market_run: MarketRun) -> None:
    rng = random.Random(20261125)
    flags = ["--min-agents", "2", "--round-timeout", "0.3", "--payment", "second_price"]
    market_run.serve(*flags, "--max-tokens", "100000")
    market_run.agent("alice", *static_agent("a=0.7,b=0.3", 1))
    market_run.agent("bob", *static_agent("b=0.5,c=0.5", 2))
    auctioneer = market_run.processes[0]
    committed_before_kill = []
    for _ in range(KILLS):
        wait_until(lambda: committed_rounds(market_run.db) > (committed_before_kill or [0])[-1], what="progress")
        time.sleep(rng.uniform(0.0, 0.3))
        auctioneer.send_signal(signal.SIGKILL)
        auctioneer.wait()
        committed_before_kill.append(committed_rounds(market_run.db))
        market_run.serve(*flags, "--max-tokens", "100000")
        auctioneer = market_run.processes[-1]
    # Let the agents recover by themselves, then end the market a few tokens later.
    wait_until(lambda: committed_rounds(market_run.db) > committed_before_kill[-1] + 3, what="recovery")
    auctioneer.send_signal(signal.SIGTERM)
    assert auctioneer.wait(10) == 0
    tokens = len(read_ledger(market_run.db)["text"])
    market_run.serve(*flags, "--max-tokens", str(tokens + 5))
    agents = market_run.processes[1:3]
    assert [p.wait(60) for p in agents] == [0, 0], market_run.logs()
    assert market_run.processes[-1].wait(30) == 0

    ledger = read_ledger(market_run.db)
    rounds = ledger["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))
    assert len(rounds) >= committed_before_kill[-1] + 3
    paid: dict[str, float] = {}
    for r in rounds:
        assert set(r["payments"]) == set(r["bids"]), f"round {r['round']}: payments without bids or the reverse"
        for agent, amount in r["payments"].items():
            paid[agent] = paid.get(agent, 0.0) + amount
    assert ledger["balances"] == pytest.approx(paid)
    assert sum(1 for r in rounds if {"alice", "bob"} <= set(r["bids"])) >= len(rounds) - 2 * KILLS
    audit = run_cli("-m", "auctioneer", "audit", "--db", str(market_run.db))
    assert audit.returncode == 0, audit.stdout

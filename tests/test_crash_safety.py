"""SIGKILL the auctioneer at random moments, restart it on the same database, and check the ledger."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest

from auctioneer.ledger import Ledger
from tests.helpers import MarketRun, committed_rounds, read_ledger, run_cli, static_agent, stopped_within, wait_until

KILLS = 20


def test_random_sigkills_lose_nothing_and_charge_nobody_twice(market_run: MarketRun) -> None:
    rng = random.Random(20261125)
    flags = ["--min-agents", "2", "--round-timeout", "0.3", "--payment", "second_price"]
    market_run.serve(*flags, "--max-tokens", "100000")
    reports = {name: market_run.directory / f"{name}.json" for name in ("alice", "bob")}
    market_run.agent("alice", *static_agent("a=0.7,b=0.3", 1), "--report-json", str(reports["alice"]))
    market_run.agent("bob", *static_agent("b=0.5,c=0.5", 2), "--report-json", str(reports["bob"]))
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
    assert stopped_within(auctioneer, 10) == 0, market_run.logs()
    tokens = len(read_ledger(market_run.db)["text"])
    market_run.serve(*flags, "--max-tokens", str(tokens + 5))
    agents = market_run.processes[1:3]
    assert [p.wait(60) for p in agents] == [0, 0], market_run.logs()
    assert market_run.processes[-1].wait(30) == 0

    ledger = read_ledger(market_run.db)
    rounds = ledger["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))
    assert len(rounds) >= committed_before_kill[-1] + 3
    for r in rounds:
        assert set(r["payments"]) == set(r["bids"]), f"round {r['round']}: payments without bids or the reverse"
    # What each agent was charged, as it saw every result itself (through every kill and resync),
    # is what the ledger holds.
    for name, path in reports.items():
        report = json.loads(path.read_text())
        (market,) = report["markets"]
        charged = [r["payment"] for r in market["rounds"]]
        assert len(charged) == len(rounds), f"{name} saw {len(charged)} of {len(rounds)} rounds"
        assert ledger["balances"][name] == pytest.approx(sum(charged))
    assert sum(1 for r in rounds if {"alice", "bob"} <= set(r["bids"])) >= len(rounds) - 2 * KILLS
    audit = run_cli("-m", "auctioneer", "audit", "--db", str(market_run.db))
    assert audit.returncode == 0, audit.stdout


def test_sigkills_with_many_open_markets_lose_nothing_and_keep_every_budget(market_run: MarketRun) -> None:
    rng = random.Random(20261126)
    count, kills = 12, 6
    config = market_run.directory / "exchange.toml"
    config.write_text(
        "max_tokens = 100000\nmax_idle_rounds = 100000\nround_timeout = 0.3\nmin_agents = 2\n"
        'payment = "first_price"\nbudget = 40.0\n'
        + "".join(f'[[markets]]\nid = "q{k:02d}"\nprompt = "Q{k}:"\n' for k in range(count))
    )
    market_run.serve("--config", str(config))
    market_run.agent("alice", *static_agent("a=0.7,b=0.3", 0.25), "--stay")
    market_run.agent("bob", *static_agent("b=0.5,c=0.5", 0.5), "--stay")

    def rounds_per_market() -> dict[str, int]:
        if not market_run.db.exists():
            return {}
        with Ledger(market_run.db) as ledger:
            return {m.id: m.last_round for m in ledger.markets()}

    before: list[dict[str, int]] = []
    for _ in range(kills):
        wait_until(lambda: sum(rounds_per_market().values()) > sum((before or [{}])[-1].values()), what="progress")
        time.sleep(rng.uniform(0.0, 0.4))
        auctioneer = market_run.processes[0] if not before else market_run.processes[-1]
        auctioneer.send_signal(signal.SIGKILL)
        auctioneer.wait()
        before.append(rounds_per_market())
        market_run.serve("--config", str(config))
    # Every market resumes: each commits rounds beyond its count at the last kill.
    wait_until(lambda: all(n > before[-1][m] for m, n in rounds_per_market().items()), what="every market resumed")
    market_run.processes[-1].send_signal(signal.SIGTERM)
    assert stopped_within(market_run.processes[-1], 10) == 0, market_run.logs()
    for agent in market_run.processes[1:3]:
        agent.terminate()
        agent.wait(30)

    with Ledger.open_existing(market_run.db) as ledger:
        for market in ledger.markets():
            numbers = [r.round for r in ledger.rounds(market.id)]
            assert numbers == list(range(1, len(numbers) + 1)), f"market {market.id} lost or repeated a round"
            for stored in ledger.rounds(market.id):
                assert set(stored.payments) == {b.agent for b in stored.bids}
        spent = ledger.spent()
        refused = "BUDGET_EXCEEDED" in (market_run.directory / "bob.log").read_text()
    assert spent["bob"] <= 40.0 + 1e-9 and spent["alice"] <= 40.0 + 1e-9
    assert refused and spent["bob"] > 39.0, "the budget should be reached, and held"
    audit = run_cli("-m", "auctioneer", "audit", "--db", str(market_run.db))
    assert audit.returncode == 0, audit.stdout[-2000:]

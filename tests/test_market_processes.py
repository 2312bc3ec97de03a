"""Whole markets as separate processes over loopback TCP, checked against the ledger and `evaluate`."""

from __future__ import annotations

import signal

import pytest

from auctioneer.evaluate import RoundInput, evaluate_round
from tests.helpers import MarketRun, committed_rounds, read_ledger, run_cli, static_agent, stopped_within, wait_until

AGENTS = {
    "alice": static_agent("Large=0.8,Generative=0.2", 1),
    "bob": static_agent("Large=1.0", 2),
    "carol": static_agent("Generative=0.6,Models=0.4", 2),
}


def start_agents(run: MarketRun, agents: dict[str, list[str]]) -> None:
    for name, args in agents.items():
        run.agent(name, *args)


@pytest.mark.parametrize("payment,mode", [("second_price", "sample"), ("critical_bid", "stable")])
def test_ledger_matches_evaluate_round_by_round(market_run: MarketRun, payment: str, mode: str) -> None:
    market_run.serve("--min-agents", "3", "--max-tokens", "5", "--payment", payment, "--mode", mode, "--prompt", "Go:")
    start_agents(market_run, AGENTS)
    # Agents exit 1 if any result fails their checks (the draw, their own charge and sponsor share).
    assert market_run.wait(timeout=60) == [0, 0, 0, 0], market_run.logs()
    ledger = read_ledger(market_run.db)
    assert [r["round"] for r in ledger["rounds"]] == [1, 2, 3, 4, 5]
    assert ledger["text"] == "Go:" + "".join(r["token"] for r in ledger["rounds"])
    totals: dict[str, float] = {}
    for stored in ledger["rounds"]:
        assert sorted(stored["bids"]) == ["alice", "bob", "carol"]
        spec = RoundInput.model_validate(
            {
                "payment": payment,
                "mode": mode,
                "seed": stored["seed"],
                "bids": [
                    {"agent": a, "bid": b["bid"], "distribution": b["distribution"]} for a, b in stored["bids"].items()
                ],
            }
        )
        expected = evaluate_round(spec)
        assert stored["token"] == expected["token"]
        assert stored["distribution"] == pytest.approx(expected["distribution"], abs=1e-12)
        assert stored["payments"] == pytest.approx(expected["payments"], abs=1e-12)
        assert stored["sponsors"] == pytest.approx(expected["sponsors"], abs=1e-12)
        assert sum(stored["sponsors"].values()) == pytest.approx(1.0)
        assert stored["seed_commitment"] == expected["seed_commitment"]
        for agent, paid in stored["payments"].items():
            totals[agent] = totals.get(agent, 0.0) + paid
    assert ledger["balances"] == pytest.approx({agent: paid for agent, paid in totals.items() if paid > 0})
    assert any(paid > 0 for paid in totals.values())
    assert run_cli("-m", "auctioneer", "audit", "--db", str(market_run.db)).returncode == 0


def test_rounds_go_on_without_a_killed_agent(market_run: MarketRun) -> None:
    market_run.serve("--min-agents", "3", "--max-tokens", "400")
    start_agents(market_run, AGENTS)
    wait_until(lambda: committed_rounds(market_run.db) >= 2, what="two rounds")
    victim = market_run.processes[2]  # bob
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert [p.wait(60) for p in market_run.processes[:2]] == [0, 0], market_run.logs()
    rounds = read_ledger(market_run.db)["rounds"]
    assert len(rounds) == 400
    assert "bob" in rounds[0]["bids"]
    assert all(sorted(r["bids"]) == ["alice", "carol"] for r in rounds[-3:])
    assert "agent bob silent for" in market_run.logs()  # the operator is told why rounds stopped waiting


def test_same_seed_and_agents_write_the_same_text(
    market_run: MarketRun, tmp_path_factory: pytest.TempPathFactory
) -> None:
    texts = []
    for attempt in range(2):
        run = MarketRun(tmp_path_factory.mktemp(f"market{attempt}"))
        try:
            run.serve("--min-agents", "3", "--max-tokens", "6", "--seed", "42" * 32)
            start_agents(run, AGENTS)
            assert run.wait(timeout=60) == [0, 0, 0, 0], run.logs()
        finally:
            run.stop()
        ledger = read_ledger(run.db)
        texts.append((ledger["text"], [r["seed"] for r in ledger["rounds"]]))
    assert texts[0] == texts[1]
    assert len(set(texts[0][0])) > 1


RESTARTED = ["--min-agents", "2", "--max-tokens", "80", "--round-timeout", "0.3"]
# Rounds of 0.3 s: while the agents find the restarted auctioneer (they re-register and resync on a
# loaded machine), three idle rounds must not end the market; this test is about continuing it.
RESTARTED += ["--max-idle-rounds", "1000"]


def test_restart_on_the_same_database_continues_the_market(market_run: MarketRun) -> None:
    market_run.serve(*RESTARTED)
    market_run.agent("alice", *AGENTS["alice"])
    market_run.agent("bob", *AGENTS["bob"])
    wait_until(lambda: committed_rounds(market_run.db) >= 3, what="three rounds")
    auctioneer = market_run.processes[0]
    auctioneer.send_signal(signal.SIGUSR1)  # a stack dump for the operator; the market goes on
    wait_until(lambda: "Current thread" in market_run.logs(), what="the stack dump in the log")
    rounds = committed_rounds(market_run.db)
    wait_until(lambda: committed_rounds(market_run.db) > rounds, what="a round after the dump")
    auctioneer.send_signal(signal.SIGTERM)
    assert stopped_within(auctioneer, 10) == 0, market_run.logs()
    stopped_at = committed_rounds(market_run.db)
    assert stopped_at < 80
    market_run.serve(*RESTARTED)
    assert [p.wait(60) for p in market_run.processes[1:]] == [0, 0, 0], market_run.logs()
    ledger = read_ledger(market_run.db)
    assert [r["round"] for r in ledger["rounds"]] == list(range(1, len(ledger["rounds"]) + 1))
    assert len([r for r in ledger["rounds"] if r["token"] is not None]) == 80, market_run.logs()
    assert len(ledger["rounds"]) > stopped_at
    assert ledger["balances"]["bob"] == pytest.approx(2.0 * sum("bob" in r["bids"] for r in ledger["rounds"]))

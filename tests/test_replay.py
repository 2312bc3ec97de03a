"""``auctioneer replay`` on a ledger recorded by a real market (auctioneer and agents as processes):
the recorded rule gives back the record, another rule gives what ``auctioneer evaluate`` says of the
same rounds, and a rule that cannot run on the market is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auctioneer.audit import bidders
from auctioneer.ledger import SqliteLedger
from tests.helpers import MarketRun, run_cli, static_agent


@pytest.fixture
def recorded(market_run: MarketRun) -> Path:
    """A critical-bid market of 8 rounds with a fixed reference, recorded by three agents."""
    config = market_run.directory / "exchange.toml"
    config.write_text('prompt = ""\nreference = { c = 1.0 }\nreference_weight = 0.5\n')
    market_run.serve("--config", str(config), "--max-tokens", "8", "--payment", "critical_bid", "--mode", "stable",
                     "--min-agents", "3")  # fmt: skip
    market_run.agent("alice", *static_agent("a=0.7,b=0.3", 1.0))
    market_run.agent("bob", *static_agent("b=0.6,c=0.4", 2.0))
    market_run.agent("carol", *static_agent("a=0.2,c=0.8", 1.5))
    assert [p.wait(60) for p in market_run.processes] == [0, 0, 0, 0], market_run.logs()
    return market_run.db


def replay(db: Path, *rule: str) -> dict[str, Any]:
    done = run_cli("-m", "auctioneer", "replay", "--db", str(db), "--json", *rule)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def evaluate_inputs(db: Path, **rule: Any) -> tuple[list[dict[str, Any]], list[str | None]]:
    """Every recorded round as ``auctioneer evaluate`` takes it, under ``rule``; and the recorded tokens."""
    with SqliteLedger.open_existing(db) as ledger:
        (market,) = ledger.markets()
        settings = market.definition["settings"]
        mechanism = {k: settings[k] for k in ("aggregation", "payment", "mode", "temperature", "eps")}
        rounds, tokens = [], []
        for stored in ledger.rounds(market.id):
            bids = [{"agent": b.agent, "bid": b.bid, "distribution": b.distribution()} for b in bidders(stored)]
            reference = {"reference": settings["reference"], "reference_weight": settings["reference_weight"]}
            rounds.append({**mechanism, **rule, **reference, "seed": stored.seed.hex(), "bids": bids})
            tokens.append(stored.token)
    return rounds, tokens


def test_the_recorded_rule_gives_back_the_record(recorded: Path) -> None:
    total = replay(recorded)["total"]
    with SqliteLedger.open_existing(recorded) as ledger:
        (market,) = ledger.markets()
        paid = ledger.document(market.id)["balances"]
    assert total["rounds"] == 8 and total["token_changed"]["total"] == 0
    revenue = total["revenue"]
    assert revenue["recorded"]["total"] == pytest.approx(sum(paid.values()))
    assert revenue["counterfactual"]["total"] == pytest.approx(revenue["recorded"]["total"])
    for agent, amount in paid.items():
        assert total["agents"][agent]["charge"]["recorded"]["total"] == pytest.approx(amount)
    low, high = revenue["recorded"]["low"], revenue["recorded"]["high"]
    assert low <= revenue["recorded"]["mean"] <= high


def test_another_rule_gives_what_evaluate_says_of_the_same_rounds(recorded: Path, tmp_path: Path) -> None:
    document = replay(recorded, "--payment", "second_price", "--mode", "sample", "--out", str(tmp_path / "out"))
    rounds, tokens = evaluate_inputs(recorded, payment="second_price", mode="sample")
    (tmp_path / "rounds.json").write_text(json.dumps(rounds))
    done = run_cli("-m", "auctioneer", "evaluate", str(tmp_path / "rounds.json"))
    assert done.returncode == 0, done.stderr
    evaluated = json.loads(done.stdout)
    total = document["total"]
    assert total["revenue"]["counterfactual"]["total"] == pytest.approx(
        sum(sum(r["payments"].values()) for r in evaluated)
    )
    for agent in ("alice", "bob", "carol"):
        assert total["agents"][agent]["charge"]["counterfactual"]["total"] == pytest.approx(
            sum(r["payments"].get(agent, 0.0) for r in evaluated)
        )
    changed = sum(r["token"] != token for r, token in zip(evaluated, tokens, strict=True))
    assert total["token_changed"]["total"] == changed
    assert (tmp_path / "out" / "replay.png").stat().st_size > 0
    assert json.loads((tmp_path / "out" / "replay.json").read_text()) == document


def test_a_rule_the_market_cannot_use_is_refused_in_one_line(recorded: Path) -> None:
    done = run_cli("-m", "auctioneer", "replay", "--db", str(recorded), "--payment", "critical_bid", "--mode", "sample")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "critical_bid needs mode greedy or stable" in done.stderr

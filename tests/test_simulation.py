"""``auctioneer simulate``: scenario files, both run modes, summaries, plots and the strategy evidence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from auctioneer.ledger import Ledger
from simulation.in_process import run_in_process
from simulation.report import summarize
from simulation.scenario import Scenario, ScenarioError
from tests.helpers import load_scenario, read_ledger, run_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def settled_bid_ratio(summary: dict, name: str, last: int) -> float:
    agent = summary["agents"][name]
    bids = [b for b in agent["bids"][-last:] if b is not None]
    return float(np.mean(bids)) / agent["value"]


@pytest.mark.parametrize("payment", ["first_price", "second_price"])
def test_learning_bidders_bid_their_value_only_under_second_price(payment: str, tmp_path: Path) -> None:
    scenario = load_scenario(EXAMPLES / "first-vs-second-price.toml").with_payment(payment)
    db = run_in_process(scenario, tmp_path / "ledger.db", 0, rounds=None)
    summary = summarize(db, scenario)
    ratios = {name: settled_bid_ratio(summary, name, last=800) for name in ("red", "blue", "green")}
    if payment == "second_price":
        assert all(0.6 <= r <= 1.4 for r in ratios.values()), ratios
    else:
        assert all(r < 0.6 for r in ratios.values()), ratios


def test_simulate_article_as_live_processes(tmp_path: Path) -> None:
    out = tmp_path / "article"
    result = run_cli("-m", "auctioneer", "simulate", str(EXAMPLES / "article.toml"), "--out", str(out), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    ledger = read_ledger(out / "ledger.db")
    assert summary["text"] == ledger["text"] and summary["text"].startswith("Mechanism Design for")
    assert summary["revenue"] == pytest.approx(sum(ledger["balances"].values()))
    first = ledger["rounds"][0]
    assert first["distribution"] == pytest.approx({" Large": 0.56, " Generative": 0.44})
    assert {p.name for p in out.glob("*.png")} == {"revenue.png", "payments.png", "influence.png", "bids.png"}
    agent2 = summary["agents"]["agent2"]
    assert agent2["total_paid"] == pytest.approx(2.0 * summary["rounds"])


def test_simulate_ad_creative_in_process_with_repeats(tmp_path: Path) -> None:
    out = tmp_path / "ads"
    result = run_cli(
        "-m",
        "auctioneer",
        "simulate",
        str(EXAMPLES / "ad-creative.toml"),
        "--in-process",
        "--out",
        str(out),
        "--repeat",
        "3",
        "--seed",
        "7",
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    overall = json.loads((out / "summary.json").read_text())
    assert overall["runs"] == 3 and overall["revenue"]["mean"] > 0
    runs = [json.loads((out / f"run-{k}" / "summary.json").read_text()) for k in range(3)]
    for run in runs:
        assert run["text"].startswith("Vacations in Hawaii:")
        for name in ("alpha-airlines", "beta-resort"):
            agent = run["agents"][name]
            assert 0 < agent["total_paid"] <= 40.0  # budgets hold
            assert agent["mean_bid"] <= agent["value"]
    assert len({run["text"] for run in runs}) > 1, "different seeds give different markets"


def test_agent_client_runs_a_scenario_agent(tmp_path: Path) -> None:
    result = run_cli("-m", "agent_client", "--name", "nobody", "--scenario", str(EXAMPLES / "article.toml"))
    assert result.returncode == 2 and "no agent named 'nobody'" in result.stderr


@pytest.mark.parametrize(
    "content,message",
    [
        ("[market]\nrounds = 0\n[[agents]]\nname = 'a'\n", "rounds"),
        ("[[agents]]\nname = 'a'\nstrategy = 'psychic'\n", "unknown strategy"),
        ("[market]\npayment = ['first_price', 'critical_bid']\n[[agents]]\nname = 'a'\n", "needs mode greedy"),
        ("[[agents]]\nname = 'a'\ntype = 'robot'\n", "agent type"),
        ("agents = []\n", "at least one agent"),
        ("[market\n", "not valid TOML"),
    ],
)
def test_bad_scenarios_get_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    result = run_cli("-m", "auctioneer", "simulate", str(path), "--in-process", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_scenario_takes_every_public_market_setting(tmp_path: Path) -> None:
    document = {"market": {"eps": 1e-3, "aggregation": "log_linear", "max_bid": 5.0}, "agents": [{"name": "a"}]}
    settings = Scenario.from_document(document, tmp_path / "s.toml").settings(tmp_path / "l.db", 0, rounds=7)
    assert (settings.eps, settings.aggregation, settings.max_bid) == (1e-3, "log_linear", 5.0)
    assert (settings.max_tokens, settings.max_idle_rounds, settings.min_agents) == (7, 7, 1)
    with pytest.raises(ScenarioError, match="max_tokens is set by rounds"):
        Scenario.from_document({"market": {"max_tokens": 3}, "agents": [{"name": "a"}]}, tmp_path / "s.toml")


def test_learners_bid_about_their_value_under_critical_bid(tmp_path: Path) -> None:
    scenario = load_scenario(EXAMPLES / "payment-rules.toml").with_payment("critical_bid")
    db = run_in_process(scenario, tmp_path / "ledger.db", 1, rounds=None)
    summary = summarize(db, scenario)
    ratios = {name: settled_bid_ratio(summary, name, last=800) for name in ("red", "blue", "green")}
    assert all(0.6 <= r <= 1.4 for r in ratios.values()), ratios
    assert 0 < summary["revenue"] < sum(sum(b for b in a["bids"] if b) for a in summary["agents"].values())


def test_simulate_compares_payment_rules(tmp_path: Path) -> None:
    out = tmp_path / "rules"
    result = run_cli(
        "-m", "auctioneer", "simulate", str(EXAMPLES / "payment-rules.toml"), "--in-process", "--rounds", "40",
        "--out", str(out), timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    comparison = json.loads((out / "comparison.json").read_text())
    assert list(comparison) == ["first_price", "second_price", "critical_bid"]
    for rule, summary in comparison.items():
        assert summary["rounds"] == 40 and summary["settings"]["payment"] == rule
        assert summary["realised_welfare"] == pytest.approx(
            sum(a["realised_value"] for a in summary["agents"].values())
        )
    assert (out / "comparison.png").stat().st_size > 10_000


def check_exchange_run(out: Path, markets: int) -> dict[str, Any]:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["markets"] == markets and summary["rounds"] >= 8 * markets
    assert all(
        text.startswith(("Vacations", "Cheap", "Weekend", "Family", "Ski")) for text in summary["texts"].values()
    )
    revenue = [total for _, total in summary["revenue_over_time"]]
    assert revenue == sorted(revenue) and revenue[-1] == pytest.approx(summary["revenue"])
    for name, agent in summary["agents"].items():
        assert agent["spent"] <= agent["budget"] + 1e-9, name
    with Ledger.open_existing(out / "ledger.db") as ledger:
        assert sum(ledger.spent().values()) == pytest.approx(summary["revenue"])
        assert all(m.closed is not None for m in ledger.markets())
    assert {p.name for p in out.glob("*.png")} == {"exchange-revenue.png", "exchange-spend.png", "exchange-latency.png"}
    return dict(summary)


def test_ad_exchange_in_process_paces_every_budget(tmp_path: Path) -> None:
    out = tmp_path / "exchange"
    result = run_cli(
        "-m", "auctioneer", "simulate", str(EXAMPLES / "ad-exchange.toml"), "--in-process", "--out", str(out)
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = check_exchange_run(out, 40)
    for agent in summary["agents"].values():
        # the budget lasts the whole run: half of it is left at half time, and nearly all of it is used
        halfway = max(spent for at, spent in agent["spend_over_time"] if at <= summary["duration"] / 2)
        assert 0.3 * agent["budget"] <= halfway <= 0.8 * agent["budget"]
        assert agent["spent"] >= 0.9 * agent["budget"]


def test_ad_exchange_as_live_processes(tmp_path: Path) -> None:
    scenario = (
        (EXAMPLES / "ad-exchange.toml")
        .read_text()
        .replace("count = 40", "count = 6")
        .replace("rate = 4.0", "rate = 8.0")
    )
    (tmp_path / "short.toml").write_text(scenario)
    out = tmp_path / "exchange"
    result = run_cli("-m", "auctioneer", "simulate", str(tmp_path / "short.toml"), "--out", str(out), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = check_exchange_run(out, 6)
    assert 0 < summary["latency_p50"] <= summary["latency_p99"] and summary["fsyncs_per_round"] <= 1.0


def test_a_sweep_draws_one_frontier_point_per_value_from_its_runs(tmp_path: Path) -> None:
    out = tmp_path / "frontier"
    done = run_cli("-m", "auctioneer", "simulate", str(EXAMPLES / "ad-creative.toml"), "--in-process",
                   "--sweep", "reference_weight=0,2", "--repeat", "2", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    frontier = json.loads((out / "frontier.json").read_text())
    assert frontier["setting"] == "reference_weight" and [p["value"] for p in frontier["points"]] == [0.0, 2.0]
    for point in frontier["points"]:
        runs = [json.loads((out / f"reference_weight={point['value']:g}" / f"run-{k}" / "summary.json").read_text())
                for k in range(2)]  # fmt: skip
        assert point["revenue"]["mean"] == pytest.approx(np.mean([r["revenue"] for r in runs]))
        assert all(r["settings"]["reference_weight"] == point["value"] for r in runs)
        assert point["nll"] is None and point["quality"] == "the scenario names no [quality] model"
    # Under second_price a heavier reference is a higher reserve: the advertisers pay more for their pull.
    assert frontier["points"][1]["revenue"]["mean"] > frontier["points"][0]["revenue"]["mean"]
    assert (out / "frontier.png").stat().st_size > 0


def test_a_sweep_of_a_setting_that_is_not_a_number_is_refused_in_one_line(tmp_path: Path) -> None:
    done = run_cli("-m", "auctioneer", "simulate", str(EXAMPLES / "ad-creative.toml"), "--in-process",
                   "--sweep", "payment=1,2", "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "numeric market setting" in done.stderr


def test_a_scenarios_reference_agent_is_its_markets_reference(tmp_path: Path) -> None:
    scenario = Scenario.model_validate({
        "market": {"prompt": "Go:", "rounds": 4, "reference_agent": "reader", "reference_weight": 3.0},
        "agents": [
            {"name": "ad", "params": {"distribution": {" buy": 1.0}}, "value": 1.0},
            {"name": "reader", "params": {"distribution": {" read": 1.0}}, "value": 0.0},
        ],
    })  # fmt: skip
    db = run_in_process(scenario, tmp_path / "ledger.db", 0, rounds=None)
    with Ledger.open_existing(db) as ledger:
        (market,) = ledger.markets()
        rounds = list(ledger.rounds(market.id))
    assert market.definition["reference_agent"] == "reader" and len(rounds) == 4
    for stored in rounds:
        assert {b.agent: b.reference for b in stored.bids} == {"ad": False, "reader": True}
        assert stored.result.reference_weight == 3.0 and "reader" not in stored.payments
    assert summarize(db, scenario)["quality"] == {"measured": False, "why": "the scenario names no [quality] model"}

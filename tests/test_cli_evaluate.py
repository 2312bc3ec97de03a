"""``auctioneer evaluate`` as a user runs it: a real subprocess, JSON in, JSON out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ARTICLE_ROUND: dict[str, Any] = {
    "seed": "ab" * 32,
    "bids": [
        {"agent": "a1", "bid": 1, "distribution": {"Large": 0.8, "Generative": 0.2}},
        {"agent": "a2", "bid": 2, "distribution": {"Large": 1.0}},
        {"agent": "a3", "bid": 2, "distribution": {"Generative": 1.0}},
    ],
}


def evaluate(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auctioneer", "evaluate", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_reproduces_the_article() -> None:
    result = evaluate(json.dumps(ARTICLE_ROUND))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["distribution"] == pytest.approx({"Large": 0.56, "Generative": 0.44})
    assert out["payments"] == {"a1": 1.0, "a2": 2.0, "a3": 2.0}
    assert out["seed"] == "ab" * 32
    assert out["seed_commitment"] == "9a2db2e23f1504cd056606553ac049c5e718e8f9ce9233876df1a7a1821af885"
    assert out["token"] == "Large"
    assert out["sponsors"] == pytest.approx({"a1": 0.8 / 2.8, "a2": 2.0 / 2.8})


def test_batch_from_file_answers_in_order(tmp_path: Path) -> None:
    second = {**ARTICLE_ROUND, "payment": "second_price", "mode": "greedy", "aggregation": "log_linear"}
    path = tmp_path / "rounds.json"
    path.write_text(json.dumps([ARTICLE_ROUND, second]))
    result = evaluate("", str(path))
    assert result.returncode == 0, result.stderr
    first_out, second_out = json.loads(result.stdout)
    assert first_out["payments"]["a2"] == 2.0
    assert 0 < second_out["payments"]["a2"] < 2.0
    assert second_out["token"] == "Large"


def test_fresh_seed_when_none_given() -> None:
    round_ = {k: v for k, v in ARTICLE_ROUND.items() if k != "seed"}
    seeds = {json.loads(evaluate(json.dumps(round_)).stdout)["seed"] for _ in range(2)}
    assert len(seeds) == 2


@pytest.mark.parametrize(
    "change,field",
    [
        ({"payment": "vickrey"}, "payment"),
        ({"payment": "critical_bid"}, "critical_bid needs mode greedy or stable"),
        ({"temperature": 0}, "temperature"),
        ({"seed": "xyz"}, "seed"),
        ({"bids": [{"agent": "a", "bid": -1, "distribution": {"x": 1}}]}, "bids[0].bid"),
        ({"bids": [{"agent": "a", "bid": 1, "distribution": {"x": 0.5}}]}, "bids[0].distribution"),
        ({"bids": []}, "needs at least one bid"),
        ({"bids": [{"agent": "a", "bid": 1, "distribution": {"x": 1}}] * 2}, "at most once"),
        ({"reference": {"distribution": {"x": 1}, "weight": -1}}, "reference_weight"),
    ],
)
def test_invalid_input_names_the_field(change: dict[str, Any], field: str) -> None:
    result = evaluate(json.dumps({**ARTICLE_ROUND, **change}))
    assert result.returncode == 2
    assert result.stdout == ""
    assert field in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_not_json_and_missing_file() -> None:
    assert evaluate("{nope").returncode == 2
    missing = evaluate("", "/nonexistent/rounds.json")
    assert missing.returncode == 2 and "cannot read" in missing.stderr

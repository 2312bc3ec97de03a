"""Bidding strategies, alone and composed with agents."""

from __future__ import annotations

import numpy as np
import pytest

from agent_client import Bid, RoundContext, StaticAgent
from agent_client.strategies import (
    BudgetPaced,
    Fixed,
    LearningBidder,
    Shading,
    StrategicAgent,
    Truthful,
    observed_utility,
)
from protocol.messages import OutcomeDistribution, RoundResult


def context(
    round_: int = 1, budget: float | None = None, spent: float = 0.0, reserved: float = 0.0, decisions: int = 1
) -> RoundContext:
    return RoundContext(
        name="me",
        round=round_,
        prompt="",
        text="",
        tokens=(),
        budget=budget,
        spent=spent,
        timeout=1.0,
        reserved=reserved,
        decisions=decisions,
    )


def result(q: dict[str, float], payment: float, bid: float, round_: int = 1) -> RoundResult:
    return RoundResult(
        seq=2,
        round=round_,
        token=next(iter(q)),
        text="",
        bids={"me": bid},
        payments={"me": payment},
        balances={"me": payment},
        seed="00" * 32,
        seed_commitment="11" * 32,
        distribution=OutcomeDistribution.from_arrays(list(q), np.array(list(q.values()))),
    )


def test_simple_strategies() -> None:
    assert Fixed(1.5).amount(context()) == 1.5
    assert Truthful(2.0).amount(context()) == 2.0
    assert Shading(2.0, 0.25).amount(context()) == 0.5
    with pytest.raises(ValueError):
        Shading(1.0, 1.5)


def test_budget_pacing_spreads_what_is_left_across_markets() -> None:
    paced = BudgetPaced(budget=10.0, expected_rounds=10)
    assert paced.amount(context(decisions=1)) == pytest.approx(1.0)
    assert paced.amount(context(decisions=6, spent=7.0)) == pytest.approx(3.0 / 5)
    # bids in other markets' open rounds hold part of what is left
    assert paced.amount(context(round_=1, decisions=6, spent=5.0, reserved=2.0)) == pytest.approx(3.0 / 5)
    assert paced.amount(context(decisions=10, spent=10.0)) == 0.0


def test_observed_utility_is_value_times_allocation_minus_payment() -> None:
    assert observed_utility(2.0, {"a": 1.0}, result({"a": 0.75, "b": 0.25}, 0.5, 1.0), "me") == pytest.approx(1.0)


def test_strategic_agent_sets_the_amount_and_caps_it_by_budget() -> None:
    agent = StrategicAgent(StaticAgent({"a": 1.0}, 99.0), Truthful(3.0), value=3.0)
    assert agent.decide(context()) == Bid({"a": 1.0}, 3.0)
    assert agent.decide(context(budget=5.0, spent=4.0)) == Bid({"a": 1.0}, 1.0)


def test_learning_bidder_moves_towards_the_arm_that_pays() -> None:
    bidder = LearningBidder(value=1.0, multipliers=(0.5, 1.0), exploration=0.1, learning_rate=0.2, seed=3)
    agent = StrategicAgent(StaticAgent({"a": 1.0}, 0.0), bidder, value=1.0)
    for n in range(1, 400):
        bid = agent.decide(context(round_=n))
        assert isinstance(bid, Bid)
        # Bidding 1.0 wins the whole outcome for free; bidding 0.5 wins nothing.
        q = {"a": 1.0} if bid.amount == 1.0 else {"b": 1.0}
        agent.observe(result(q, 0.0, bid.amount, round_=n), context(round_=n))
    assert bidder.probabilities()[1] > 0.9

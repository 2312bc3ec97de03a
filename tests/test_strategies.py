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


def test_budget_pacing_bids_value_shaded_by_its_multiplier_and_never_over_what_remains() -> None:
    paced = BudgetPaced(value=2.0, budget=10.0, expected_rounds=10)
    assert paced.amount(context(budget=10.0)) == 2.0  # mu = 0: bid the value
    paced.learn(2.0, 0.0, 3.0, context(budget=10.0, spent=3.0))  # paid 3, three times the share of 1
    assert paced.multiplier == pytest.approx(0.05 * 2.0)
    assert paced.amount(context(budget=10.0)) == pytest.approx(2.0 / 1.1)
    paced.learn(2.0, 0.0, 0.0, context())  # paid nothing: mu falls, never below zero
    paced.learn(2.0, 0.0, 0.0, context())
    paced.learn(2.0, 0.0, 0.0, context())
    assert paced.multiplier == 0.0
    # what bids in other markets' open rounds hold is not available either
    assert paced.amount(context(budget=10.0, spent=8.5, reserved=1.0)) == pytest.approx(0.5)


def test_budget_pacing_spends_about_its_budget_over_the_expected_rounds() -> None:
    """Against a market where a bid b costs b/4: the multiplier settles where the spend per round is the
    even share, so the budget lasts the expected rounds and is nearly all spent."""
    rounds, budget = 400, 20.0
    paced = BudgetPaced(value=1.0, budget=budget, expected_rounds=rounds)
    spent, halfway = 0.0, 0.0
    for k in range(1, rounds + 1):
        bid = paced.amount(context(budget=budget, spent=spent, decisions=k))
        paid = bid / 4
        spent += paid
        paced.learn(bid, 0.0, paid, context(budget=budget, spent=spent, decisions=k))
        if k == rounds // 2:
            halfway = spent
    assert 0.9 * budget <= spent <= budget
    assert 0.35 * budget <= halfway <= 0.65 * budget


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

"""Bidding strategies: how much to bid, composable with any agent's distribution.

A strategy sets the amount; the agent it wraps (``StrategicAgent``) still says what it wants.
Each strategy sees every result, so it can learn. The learning bidder uses EXP3 (bandit
multiplicative weights, a standard no-regret rule) over bids ``m x value`` for multipliers ``m``,
from the utility it observes. Under rules that charge for expected influence that is
``value x (1 - TV(p, q)) - payment``; under rules that charge for the token actually written
(``EX_POST_PAYMENTS``) it is the realised ``value x p(w) - payment``, ``w`` the written token.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from agent_client.agent import Agent, Bid, DecideResult, RoundContext
from protocol.messages import RoundResult

EX_POST_PAYMENTS = frozenset({"critical_bid"})


class BiddingStrategy:
    """Decides the bid amount; ``learn`` is told the outcome of each round the agent bid in (its bid,
    the utility it observed, what it paid)."""

    def amount(self, context: RoundContext) -> float:
        raise NotImplementedError

    def learn(self, bid: float, utility: float, payment: float, context: RoundContext) -> None:
        """Default: nothing to learn."""


class Fixed(BiddingStrategy):
    def __init__(self, amount: float) -> None:
        self.fixed = float(amount)

    def amount(self, context: RoundContext) -> float:
        return self.fixed


class BudgetPaced(BiddingStrategy):
    """Adaptive pacing (after Balseiro and Gur, 2019): spend the budget evenly over the rounds expected,
    in every market the agent bids in.

    The bid is ``value / (1 + mu)``, never more than what remains of the budget. After each round
    ``mu`` moves by the gap between the even share of what remains, ``rho = remaining budget /
    rounds still expected``, and what the round cost: ``mu <- max(0, mu - step (rho - payment) / rho)``.
    Paying less than the share lowers ``mu`` (bids rise towards the value), paying more raises it; a
    share recomputed from what remains corrects for past over- or underspending.
    """

    def __init__(self, value: float, budget: float, expected_rounds: int, step: float = 0.05) -> None:
        if budget <= 0 or expected_rounds < 1:
            raise ValueError("budget pacing needs a positive budget and at least one expected round")
        self.value = float(value)
        self.budget = float(budget)
        self.expected_rounds = int(expected_rounds)
        self.step = float(step)
        self.multiplier = 0.0  # mu

    def _remaining(self, context: RoundContext) -> float:
        budget = self.budget if context.budget is None else min(self.budget, context.budget)
        return max(budget - context.spent - context.reserved, 0.0)

    def amount(self, context: RoundContext) -> float:
        return min(self.value / (1.0 + self.multiplier), self._remaining(context))

    def learn(self, bid: float, utility: float, payment: float, context: RoundContext) -> None:
        rounds_left = max(self.expected_rounds - context.decisions + 1, 1)
        share = (self._remaining(context) + payment) / rounds_left
        if share <= 0:
            return
        self.multiplier = max(0.0, self.multiplier - self.step * (share - payment) / share)


class Truthful(BiddingStrategy):
    """Bids its value: the optimal bid under ``second_price``."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def amount(self, context: RoundContext) -> float:
        return self.value


class Shading(BiddingStrategy):
    """Bids a fixed fraction of its value, as bidders do under ``first_price``."""

    def __init__(self, value: float, factor: float = 0.5) -> None:
        if not 0 <= factor <= 1:
            raise ValueError(f"shading factor must be in [0, 1], got {factor}")
        self.value = float(value)
        self.factor = float(factor)

    def amount(self, context: RoundContext) -> float:
        return self.value * self.factor


class LearningBidder(BiddingStrategy):
    """EXP3 over bids ``m * value``: learns the best multiplier from its own observed utility."""

    def __init__(
        self,
        value: float,
        multipliers: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0),
        exploration: float = 0.05,
        learning_rate: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.value = float(value)
        self.multipliers = list(multipliers)
        self.exploration = exploration
        self.learning_rate = learning_rate
        self.log_weights = [0.0] * len(self.multipliers)
        self.random = random.Random(seed)
        self._last: int | None = None
        self.history: list[float] = []

    def probabilities(self) -> list[float]:
        top = max(self.log_weights)
        weights = [math.exp(w - top) for w in self.log_weights]
        total = sum(weights)
        k = len(weights)
        return [(1 - self.exploration) * w / total + self.exploration / k for w in weights]

    def amount(self, context: RoundContext) -> float:
        self._last = self.random.choices(range(len(self.multipliers)), self.probabilities())[0]
        bid = self.multipliers[self._last] * self.value
        self.history.append(bid)
        return bid

    def learn(self, bid: float, utility: float, payment: float, context: RoundContext) -> None:
        if self._last is None:
            return
        arm, self._last = self._last, None
        # Utility lies in [-max_bid, value]; rescale to a gain in [0, 1] for EXP3.
        low = -max(self.multipliers) * self.value
        gain = (utility - low) / (self.value - low) if self.value > low else 0.0
        probability = self.probabilities()[arm]
        self.log_weights[arm] += self.learning_rate * gain / probability


def observed_utility(
    value: float, wanted: Mapping[str, float], result: RoundResult, name: str, ex_post: bool = False
) -> float:
    """One round's utility from its published outcome: ``value x p(w) - payment`` if ``ex_post``,
    else ``value x (1 - TV(p, q)) - payment``."""
    if result.distribution is None or result.token is None:
        return 0.0
    payment = result.payments.get(name, 0.0)
    if ex_post:
        return value * wanted.get(result.token, 0.0) - payment
    q = result.distribution.as_mapping()
    tv = 0.5 * sum(abs(wanted.get(t, 0.0) - q.get(t, 0.0)) for t in set(wanted) | set(q))
    return value * (1.0 - tv) - payment


class StrategicAgent(Agent):
    """``inner`` says which distribution it wants; ``strategy`` says how much to bid for it."""

    def __init__(self, inner: Agent, strategy: BiddingStrategy, value: float = 0.0) -> None:
        self.inner = inner
        self.blocking = inner.blocking  # the strategies themselves take microseconds
        self.strategy = strategy
        self.value = value
        self._pending: dict[int, Bid] = {}

    def decide(self, context: RoundContext) -> DecideResult:
        proposal = self.inner.decide(context)
        if proposal is None or not isinstance(proposal, Bid):
            return proposal
        amount = self.strategy.amount(context)
        if context.remaining_budget is not None:
            amount = min(amount, context.remaining_budget)
        bid = Bid(proposal.distribution, max(amount, 0.0))
        self._pending[context.round] = bid
        return bid

    def observe(self, result: RoundResult, context: RoundContext) -> None:
        self.inner.observe(result, context)
        bid = self._pending.pop(result.round, None)
        if bid is not None and context.name in result.bids:
            ex_post = context.mechanism is not None and context.mechanism.payment in EX_POST_PAYMENTS
            utility = observed_utility(self.value, bid.distribution, result, context.name, ex_post)
            self.strategy.learn(bid.amount, utility, result.payments.get(context.name, 0.0), context)


STRATEGIES: dict[str, type[BiddingStrategy]] = {
    "fixed": Fixed,
    "budget_paced": BudgetPaced,
    "truthful": Truthful,
    "shading": Shading,
    "learning": LearningBidder,
}

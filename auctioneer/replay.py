"""Counterfactual replay: every recorded round's sealed bids run through another rule.

The standard replay assumption for sealed bids: each round's bids and distributions are held as
recorded (the agents are assumed to have bid the same under the other rule), and so is the text
(each round's bids answered the recorded text, so a token the other rule would have chosen does
not change later rounds). Each round is decided with its own recorded seed, so a rule that keeps
the draw keeps the recorded token wherever the aggregate allows.

Per market and in total, for the recorded and the counterfactual rule: revenue, each agent's
charges and allocation (the paper's: one minus the total variation between its distribution and
the aggregate), and the share of rounds whose token would change; every figure a mean per round
with a 95 % bootstrap interval over rounds.
The bootstrap is Poisson's (each round weighed by a Poisson(1) draw per replicate), so the ledger is
streamed once, round by round, whatever its size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from auctioneer.audit import bidders, rerun
from auctioneer.ledger import Store, StoredMarket, StoredRound
from auctioneer.mechanism import AuctionOutcome
from auctioneer.settings import MarketSettings
from protocol.errors import UserError, describe_validation_error

log = logging.getLogger(__name__)

MECHANISM_KEYS = ("aggregation", "payment", "mode", "temperature", "eps", "reference_weight")
REPLICATES = 1000


class ReplayError(UserError, ValueError):
    """The other rule cannot run on a recorded market; the message names the market and the setting."""


def counterfactual_settings(market: StoredMarket, overrides: Mapping[str, Any]) -> MarketSettings:
    """The market's recorded settings with ``overrides`` (mechanism keys only) applied, checked."""
    unknown = sorted(set(overrides) - set(MECHANISM_KEYS))
    if unknown:
        raise ReplayError(f"replay changes only the mechanism ({', '.join(MECHANISM_KEYS)}), not {unknown}")
    try:
        return MarketSettings.model_validate({**market.definition["settings"], **overrides})
    except ValidationError as exc:
        raise ReplayError(f"market {market.id}: {describe_validation_error(exc)}") from None


@dataclass
class RoundMeans:
    """Means per round of named figures, with Poisson-bootstrap replicates (figures absent in a round
    count as 0 there)."""

    rng: np.random.Generator
    replicates: int = REPLICATES
    rounds: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    weight_sums: np.ndarray = field(init=False)
    replicate_sums: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.weight_sums = np.zeros(self.replicates)

    def add(self, figures: Mapping[str, float], weights: np.ndarray) -> None:
        self.rounds += 1
        self.weight_sums += weights
        for name, value in figures.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            replicated = self.replicate_sums.setdefault(name, np.zeros(self.replicates))
            replicated += weights * value

    def summary(self) -> dict[str, dict[str, float]]:
        """Per figure: the mean per round, its 95 % interval, and the total over rounds."""
        described = {}
        safe = np.where(self.weight_sums > 0, self.weight_sums, 1.0)
        for name in sorted(self.sums):
            means = self.replicate_sums[name] / safe
            low, high = np.percentile(means[self.weight_sums > 0], [2.5, 97.5]) if self.rounds else (0.0, 0.0)
            described[name] = {
                "mean": self.sums[name] / self.rounds,
                "low": float(low),
                "high": float(high),
                "total": self.sums[name],
            }
        return described


def round_figures(stored: StoredRound, recorded: AuctionOutcome, other: AuctionOutcome) -> dict[str, float]:
    """One round's figures under both rules."""
    agents = [b.agent for b in bidders(stored)]
    figures = {
        "revenue.recorded": float(recorded.payments.sum()),
        "revenue.counterfactual": float(other.payments.sum()),
        "token_changed": float(recorded.token != other.token),
    }
    for rule, outcome in (("recorded", recorded), ("counterfactual", other)):
        for agent, paid, allocated in zip(agents, outcome.payments.tolist(), outcome.allocations.tolist(), strict=True):
            figures[f"charge.{rule}.{agent}"] = paid
            figures[f"allocation.{rule}.{agent}"] = allocated
    return figures


@dataclass
class Replay:
    """What a replay found: per market and in total (see :meth:`document`)."""

    overrides: dict[str, Any]
    total: RoundMeans
    markets: dict[str, RoundMeans] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        return {
            "assumption": "bids, distributions and the text held as recorded; each round's recorded seed",
            "counterfactual": self.overrides,
            "replicates": self.total.replicates,
            "total": shaped(self.total),
            "markets": {market: shaped(means) for market, means in self.markets.items()},
        }


def shaped(means: RoundMeans) -> dict[str, Any]:
    """A :class:`RoundMeans` summary grouped: revenue, token changes, and per agent."""
    summary = means.summary()
    agents: dict[str, dict[str, Any]] = {}
    for name, figure in summary.items():
        kind, _, rest = name.partition(".")
        if kind in ("charge", "allocation"):
            rule, _, agent = rest.partition(".")
            agents.setdefault(agent, {}).setdefault(kind, {})[rule] = figure
    return {
        "rounds": means.rounds,
        "revenue": {rule: summary[f"revenue.{rule}"] for rule in ("recorded", "counterfactual")}
        if means.rounds
        else None,
        "token_changed": summary.get("token_changed"),
        "agents": agents,
    }


@dataclass(frozen=True)
class ReplayPlan:
    """What to replay: the rule's changes, and each market with its counterfactual settings."""

    overrides: dict[str, Any]
    markets: list[tuple[StoredMarket, MarketSettings]]


def plan_replay(store: Store, overrides: Mapping[str, Any], market_ids: list[str] | None = None) -> ReplayPlan:
    """The named markets (default: all) with ``overrides`` applied, every one checked (a
    :class:`ReplayError` names the first that cannot use the rule) before any round is replayed."""
    markets = []
    for market_id in market_ids or store.market_ids():
        stored = store.market(market_id)
        if stored is None:
            raise ReplayError(f"{store.location} holds no market {market_id!r}")
        markets.append((stored, counterfactual_settings(stored, overrides)))
    return ReplayPlan(dict(overrides), markets)


def replay_ledger(
    store: Store,
    plan: ReplayPlan,
    seed: int = 0,
    replicates: int = REPLICATES,
    on_round: Callable[[], None] | None = None,
) -> Replay:
    """Replay every round of the plan's markets, streaming them from ``store``."""
    rng = np.random.default_rng(seed)
    total = RoundMeans(rng, replicates)
    replay = Replay(plan.overrides, total)
    for market, other in plan.markets:
        recorded = MarketSettings.model_validate(market.definition["settings"])
        means = replay.markets[market.id] = RoundMeans(rng, replicates)
        for figures in replayed_rounds(store, market, recorded, other):
            if figures is not None:
                weights = rng.poisson(1.0, replicates).astype(float)
                means.add(figures, weights)
                total.add(figures, weights)
            if on_round is not None:
                on_round()
        log.info("replayed market %s: %d rounds", market.id, means.rounds)
    return replay


def replayed_rounds(
    store: Store, market: StoredMarket, recorded: MarketSettings, other: MarketSettings
) -> Iterator[dict[str, float] | None]:
    """Each stored round's figures, in order; None for a round nobody bid in (nothing to decide)."""
    weight = other.reference_weight
    for stored in store.rounds(market.id):
        if not bidders(stored) and stored.token is None:
            yield None
            continue
        yield round_figures(stored, rerun(stored, recorded), rerun(stored, other, weight))

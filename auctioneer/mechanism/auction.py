"""One round of the token auction, end to end: aggregate, choose the token, charge payments.

``run_auction`` is the mechanism's single entry point; it is pure (numpy, no I/O) and
deterministic given its inputs and the round seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from auctioneer.mechanism.aggregation import AGGREGATIONS, bid_weights
from auctioneer.mechanism.payments import PAYMENTS, PaymentInputs, total_variation
from auctioneer.mechanism.selection import SELECTION_MODES, choose_token, seed_commitment
from auctioneer.mechanism.vocabulary import FloatArray, SparseDistribution, dense_matrix

DEFAULT_EPS = 1e-6


class MechanismConfigError(ValueError):
    """A mechanism setting names no registered rule or is out of range."""


def _check_choice(kind: str, value: str, known: dict[str, object]) -> None:
    if value not in known:
        raise MechanismConfigError(f"unknown {kind} {value!r}; choose one of {', '.join(sorted(known))}")


@dataclass(frozen=True)
class MechanismConfig:
    """Which rules run and how: names refer to the registries of each rule kind."""

    aggregation: str = "linear"
    payment: str = "first_price"
    mode: str = "sample"
    temperature: float = 1.0
    eps: float = DEFAULT_EPS

    def __post_init__(self) -> None:
        _check_choice("aggregation", self.aggregation, dict(AGGREGATIONS))
        _check_choice("payment", self.payment, dict(PAYMENTS))
        _check_choice("mode", self.mode, dict(SELECTION_MODES))
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise MechanismConfigError(f"temperature must be a positive number, got {self.temperature}")
        if not (0 < self.eps < 1):
            raise MechanismConfigError(f"eps must be in (0, 1), got {self.eps}")


@dataclass(frozen=True)
class Reference:
    """The operator's distribution ``p_0``: aggregated with weight ``b_0``, never charged."""

    distribution: SparseDistribution
    weight: float = 0.0


@dataclass(frozen=True)
class AuctionOutcome:
    """What a round decided. ``payments`` and ``allocations`` follow the order of the bids given."""

    vocab: list[str]
    distribution: FloatArray
    token: str
    payments: FloatArray
    allocations: FloatArray
    seed: bytes
    seed_commitment: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed_commitment", seed_commitment(self.seed))

    def distribution_mapping(self) -> dict[str, float]:
        return dict(zip(self.vocab, self.distribution.tolist(), strict=True))


def run_auction(
    distributions: Sequence[SparseDistribution],
    bids: ArrayLike,
    config: MechanismConfig,
    seed: bytes,
    reference: Reference | None = None,
) -> AuctionOutcome:
    """Run one round: ``q`` from the aggregation, the token from ``q`` and ``seed``, payments."""
    bid_array = np.asarray(bids, dtype=np.float64).reshape(-1)
    if len(bid_array) != len(distributions):
        raise ValueError(f"{len(distributions)} distributions but {len(bid_array)} bids")
    if not distributions and reference is None:
        raise ValueError("an auction needs at least one bid or a reference distribution")
    rows = list(distributions)
    row_bids = bid_array
    if reference is not None:
        rows.append(reference.distribution)
        row_bids = np.append(bid_array, reference.weight)
    vocab, matrix = dense_matrix(rows)
    n_agents = len(distributions)
    outcome = AGGREGATIONS[config.aggregation].aggregate(matrix, bid_weights(row_bids, n_agents), config.eps)
    if row_bids.sum() > 0:
        payments = PAYMENTS[config.payment](
            PaymentInputs(matrix, row_bids, n_agents, outcome, config.aggregation, config.eps)
        )
    else:
        payments = np.zeros(n_agents)
    return AuctionOutcome(
        vocab=vocab,
        distribution=outcome,
        token=choose_token(vocab, outcome, seed, config.mode, config.temperature),
        payments=payments,
        allocations=1.0 - total_variation(matrix[:n_agents], outcome),
        seed=seed,
    )

"""One round of the token auction, end to end: aggregate, choose the token, charge payments.

``run_auction`` is the mechanism's single entry point; it is pure (numpy, no I/O) and
deterministic given its inputs and the round seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from auctioneer.mechanism.aggregation import AGGREGATIONS, bid_weights
from auctioneer.mechanism.payments import PAYMENTS, PaymentInputs, total_variation
from auctioneer.mechanism.selection import choose_token
from auctioneer.mechanism.vocabulary import FloatArray, SparseDistribution, dense_matrix
from protocol.draw import DRAW_MODES, seed_commitment
from protocol.market_rules import MechanismSettings


class MechanismConfigError(ValueError):
    """A mechanism setting names no registered rule, or rules that cannot run together."""


def _registered(kind: str, name: str, registry: Mapping[str, object]) -> None:
    if name not in registry:
        raise MechanismConfigError(f"unknown {kind} {name!r}; choose one of {', '.join(sorted(registry))}")


def check_mechanism(settings: MechanismSettings) -> None:
    """Raise :class:`MechanismConfigError` unless every rule ``settings`` names is registered."""
    _registered("aggregation", settings.aggregation, AGGREGATIONS)
    _registered("payment", settings.payment, PAYMENTS)
    _registered("mode", settings.mode, DRAW_MODES)


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
    config: MechanismSettings,
    seed: bytes,
    reference: Reference | None = None,
) -> AuctionOutcome:
    """Run one round: ``q`` from the aggregation, the token from ``q`` and ``seed``, payments."""
    check_mechanism(config)
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

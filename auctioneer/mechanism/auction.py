"""One round of the token auction, end to end: aggregate, draw the token, charge payments, name sponsors.

``run_auction`` is the mechanism's single entry point; it is pure (numpy, no I/O) and
deterministic given its inputs and the round seed. The token is drawn with the protocol's public
draw (``protocol.draw``), so anyone can recompute it from the published aggregate and seed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from auctioneer.mechanism.aggregation import AGGREGATIONS, bid_weights
from auctioneer.mechanism.payments import PAYMENT_MODES, PAYMENTS, PaymentInputs, total_variation
from auctioneer.mechanism.vocabulary import FloatArray, Sparse, dense_matrix
from protocol.critical_bid import REFERENCE_SPONSOR
from protocol.draw import DRAW_MODES, draw_function, seed_commitment
from protocol.market_rules import MechanismSettings


class MechanismConfigError(ValueError):
    """A mechanism setting names no registered rule, or rules that cannot run together."""


def _registered(kind: str, name: str, registry: Mapping[str, object]) -> None:
    if name not in registry:
        raise MechanismConfigError(f"unknown {kind} {name!r}; choose one of {', '.join(sorted(registry))}")


def check_mechanism(settings: MechanismSettings) -> None:
    """Raise :class:`MechanismConfigError` unless every rule ``settings`` names is registered and
    the rules can run together."""
    _check_rules(settings.aggregation, settings.payment, settings.mode)


@functools.lru_cache(maxsize=256)  # a market runs the same rules every round; errors are not cached
def _check_rules(aggregation: str, payment: str, mode: str) -> None:
    _registered("aggregation", aggregation, AGGREGATIONS)
    _registered("payment", payment, PAYMENTS)
    _registered("mode", mode, DRAW_MODES)
    modes = PAYMENT_MODES.get(payment)
    if modes is not None and mode not in modes:
        raise MechanismConfigError(
            f"payment {payment} needs mode {' or '.join(modes)}, not {mode} "
            f"(it charges for the drawn token, and only those draws move monotonically with a bid)"
        )
    if payment == "critical_bid" and AGGREGATIONS[aggregation].lines is None:
        raise MechanismConfigError(f"payment critical_bid is not defined for aggregation {aggregation}")


@dataclass(frozen=True)
class Reference:
    """The operator's distribution ``p_0``: aggregated with weight ``b_0``, never charged."""

    distribution: Sparse
    weight: float = 0.0


@dataclass(frozen=True)
class AuctionOutcome:
    """What a round decided. ``payments``, ``allocations`` and ``sponsors`` follow the order of the
    bids given; ``reference_share`` is the reference's part in pulling the token. What a market does
    not need every round (allocations, the commitment) is computed when first asked for."""

    vocab: list[str]
    distribution: FloatArray
    token: str
    payments: FloatArray
    sponsors: FloatArray
    reference_share: float
    seed: bytes
    wishes: FloatArray  # the agents' distributions over ``vocab``, one row each

    @functools.cached_property
    def allocations(self) -> FloatArray:
        """Each agent's ``1 - TV(p_i, q)``."""
        return 1.0 - total_variation(self.wishes, self.distribution)

    @functools.cached_property
    def seed_commitment(self) -> str:
        return seed_commitment(self.seed)

    def distribution_mapping(self) -> dict[str, float]:
        return dict(zip(self.vocab, self.distribution.tolist(), strict=True))

    def sponsors_by_name(self, agents: Sequence[str]) -> dict[str, float]:
        """Every positive share of the pull on the token, the reference's under its reserved name."""
        shares = {name: share for name, share in zip(agents, self.sponsors.tolist(), strict=True) if share > 0}
        if self.reference_share > 0:
            shares[REFERENCE_SPONSOR] = self.reference_share
        return shares


def run_auction(
    distributions: Sequence[Sparse],
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
    winner = draw_function(config.mode)(vocab, outcome, seed, config.temperature)
    if float(np.add.reduce(row_bids)) > 0:
        inputs = PaymentInputs(
            matrix,
            row_bids,
            n_agents,
            outcome,
            config.aggregation,
            config.eps,
            vocab,
            winner,
            seed,
            config.mode,
            config.temperature,
        )
        payments = PAYMENTS[config.payment](inputs)
    else:
        payments = np.zeros(n_agents)
    shares = sponsor_shares(matrix, row_bids, winner)
    return AuctionOutcome(
        vocab=vocab,
        distribution=outcome,
        token=vocab[winner],
        payments=payments,
        wishes=matrix[:n_agents],
        sponsors=shares[:n_agents],
        reference_share=float(shares[n_agents:].sum()) if reference is not None else 0.0,
        seed=seed,
    )


def sponsor_shares(matrix: FloatArray, bids: FloatArray, winner: int) -> FloatArray:
    """Who pulled the drawn token: row ``i``'s share ``b_i p_i(w) / sum_j b_j p_j(w)`` (0 for all if nobody did)."""
    pull = bids * matrix[:, winner]
    total = float(pull.sum())
    return pull / total if total > 0 else np.zeros_like(pull)

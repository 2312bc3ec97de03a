"""The token auction mechanism of MECHANISM.md: pure numpy over arrays, no networking, no storage.

Entry point: :func:`run_auction`. Rules are looked up by name in ``AGGREGATIONS``, ``PAYMENTS``
and ``SELECTION_MODES``; adding a rule is one function plus one registry line.
"""

from auctioneer.mechanism.aggregation import AGGREGATIONS, AggregationRule
from auctioneer.mechanism.auction import (
    AuctionOutcome,
    MechanismConfig,
    MechanismConfigError,
    Reference,
    run_auction,
)
from auctioneer.mechanism.payments import PAYMENTS, total_variation
from auctioneer.mechanism.selection import SEED_BYTES, SELECTION_MODES, seed_commitment, uniform_draw
from auctioneer.mechanism.vocabulary import SparseDistribution

__all__ = [
    "AGGREGATIONS",
    "PAYMENTS",
    "SEED_BYTES",
    "SELECTION_MODES",
    "AggregationRule",
    "AuctionOutcome",
    "MechanismConfig",
    "MechanismConfigError",
    "Reference",
    "SparseDistribution",
    "run_auction",
    "seed_commitment",
    "total_variation",
    "uniform_draw",
]

"""The token auction mechanism of docs/mechanism.md: pure numpy over arrays, no networking, no storage.

Entry point: :func:`run_auction`, configured by the protocol's :class:`MechanismSettings`. Rules
are looked up by name in ``AGGREGATIONS`` and ``PAYMENTS`` (and draw modes in the protocol's
``DRAW_MODES``); adding a rule is one function plus one registry line. ``reference`` holds the
slow, obviously-correct implementation the tests and benchmarks compare against.
"""

from auctioneer.mechanism.aggregation import AGGREGATIONS, AggregationRule
from auctioneer.mechanism.auction import (
    AuctionOutcome,
    MechanismConfigError,
    Reference,
    check_mechanism,
    run_auction,
)
from auctioneer.mechanism.payments import PAYMENTS, most_charged, total_variation
from auctioneer.mechanism.vocabulary import Sparse, SparseDistribution

__all__ = [
    "AGGREGATIONS",
    "PAYMENTS",
    "AggregationRule",
    "AuctionOutcome",
    "MechanismConfigError",
    "Reference",
    "Sparse",
    "SparseDistribution",
    "check_mechanism",
    "most_charged",
    "run_auction",
    "total_variation",
]

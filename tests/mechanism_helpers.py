"""Running the numpy mechanism on a test instance."""

from __future__ import annotations

from auctioneer.mechanism import AuctionOutcome, MechanismConfig, Reference, SparseDistribution, run_auction
from tests.strategies import Instance

SEED = bytes(range(32))


def run_instance(
    instance: Instance, aggregation: str = "linear", payment: str = "first_price", seed: bytes = SEED, **config: object
) -> AuctionOutcome:
    reference = None
    if instance.reference is not None:
        reference = Reference(SparseDistribution.from_mapping(instance.reference), instance.reference_weight)
    return run_auction(
        [SparseDistribution.from_mapping(d) for d in instance.dists],
        instance.bids,
        MechanismConfig(aggregation=aggregation, payment=payment, **config),  # type: ignore[arg-type]
        seed,
        reference,
    )

"""The bids an agent keeps until their rounds end, and the total its decisions see as ``reserved``."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent_client.open_bids import OpenBids
from agent_client.verify import OwnBid


def own(amount: float) -> OwnBid:
    return OwnBid("me", {"a": 1.0}, amount)


def test_the_total_counts_each_round_of_each_market_once() -> None:
    bids = OpenBids()
    bids.add("m1", 1, own(1.5))
    bids.add("m2", 1, own(2.0))
    bids.add("m1", 2, own(0.25))
    bids.add("m1", 2, own(0.5))  # the round bid again (reopened after a restart): replaces the first
    assert bids.total == 4.0
    assert bids.take("m1", 1) == own(1.5)
    assert bids.take("m1", 1) is None  # a result seen twice releases nothing twice
    assert bids.take("unknown", 7) is None
    assert bids.total == 2.5


def test_a_closed_market_releases_every_bid_it_held() -> None:
    bids = OpenBids()
    bids.add("closed", 3, own(1.0))
    bids.add("closed", 4, own(2.0))
    bids.add("open", 1, own(0.75))
    bids.drop_market("closed")
    assert bids.total == 0.75
    assert bids.take("closed", 3) is None
    bids.drop_market("never seen")
    assert bids.total == 0.75


@given(st.lists(st.tuples(st.sampled_from(["m1", "m2", "m3"]), st.integers(1, 4), st.floats(0, 1e6)), max_size=40))
def test_the_running_total_is_the_sum_of_what_is_kept_and_exactly_zero_once_nothing_is(
    sent: list[tuple[str, int, float]],
) -> None:
    bids = OpenBids()
    kept: dict[tuple[str, int], float] = {}
    for market, number, amount in sent:
        bids.add(market, number, own(amount))
        kept[(market, number)] = amount
    assert abs(bids.total - sum(kept.values())) <= 1e-9 * max(1.0, sum(kept.values()))
    for market, number in reversed(list(kept)):
        bids.take(market, number)
    assert bids.total == 0.0

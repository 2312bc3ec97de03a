"""The dashboard's board on its own: feed events folded in order, replays and listings not counted twice."""

from __future__ import annotations

from dashboard.board import Board
from protocol.market_rules import MarketRules
from protocol.messages import MarketInfo, MarketList, MarketStatus, RoundResult

SEED = "ab" * 32


def result(number: int, token: str, payments: dict[str, float]) -> RoundResult:
    return RoundResult(
        seq=2 * number,
        round=number,
        token=token,
        text="P:" + token * number,
        distribution=None,
        bids={agent: 1.0 for agent in payments},
        payments=payments,
        balances={agent: amount * number for agent, amount in payments.items()},
        seed=SEED,
        seed_commitment=SEED,
        sponsors={"alice": 0.75, "bob": 0.25},
        market="m1",
    )


def listing(number: int, revenue: float) -> MarketList:
    info = MarketInfo(id="m1", rules=MarketRules(prompt="P:"))
    return MarketList(
        seq=1, markets=[MarketStatus(market=info, round=number, seq=2 * number, text="P:", revenue=revenue)]
    )


def test_replayed_results_and_listings_are_not_counted_twice() -> None:
    board = Board()
    board.apply(listing(0, 0.0))
    for number in (1, 2, 1, 2, 3):  # a resync replays rounds 1 and 2
        board.apply(result(number, " a", {"alice": 0.5, "bob": 0.25}))
    board.apply(listing(3, 2.25))  # the listing's revenue is the same payments, not more
    state = board.state("m1")
    assert [entry["round"] for entry in state["market"]["rounds"]] == [1, 2, 3]
    assert state["markets"][0]["revenue"] == 2.25 and state["market"]["balances"] == {"alice": 1.5, "bob": 0.75}
    assert state["market"]["rounds"][0]["sponsor"] == "alice"
    assert [entry["round"] for entry in board.state("m1", since_round=2)["market"]["rounds"]] == [3]
    version = board.version
    board.apply(listing(3, 2.25))
    assert board.version == version  # an unchanged listing is not news

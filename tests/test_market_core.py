"""The market's state machine, driven in-process with a fake clock and a real SQLite ledger.

No sockets: requests go straight to :meth:`Market.handle`, rounds are opened and closed by the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auctioneer.ledger import Ledger, LedgerError
from auctioneer.market import Market
from auctioneer.settings import ServeSettings
from protocol import Distribution, encode
from protocol.messages import (
    BidAccepted,
    Error,
    Hello,
    MarketClosed,
    Message,
    Ping,
    Pong,
    RoundResult,
    SealedBid,
    SyncReply,
    SyncRequest,
    Welcome,
)

HEARTBEAT = 1.0
SILENCE = 3 * HEARTBEAT + 0.1  # longer than an agent stays live without a message


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_market(tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    ledgers: list[Ledger] = []

    def make(**settings: Any) -> Market:
        ledger = Ledger(tmp_path / "market.db")
        ledgers.append(ledger)
        values = {"db": tmp_path / "market.db", "heartbeat_interval": HEARTBEAT, "seed": "ab" * 32, **settings}
        return Market(ServeSettings.model_validate(values), ledger, clock)

    yield make
    for ledger in ledgers:
        ledger.close()


def bid(number: int, amount: float = 1.0, **distribution: float) -> SealedBid:
    return SealedBid(round=number, distribution=Distribution.from_mapping(distribution or {"x": 1.0}), bid=amount)


def error_code(reply: Message) -> str:
    assert isinstance(reply, Error), reply
    return reply.code


def register(market: Market, *names: str) -> None:
    for name in names:
        assert isinstance(market.handle(name.encode(), Hello(name=name)), Welcome)


def test_welcome_describes_the_market_and_echoes_the_request_id(make_market: Any) -> None:
    market = make_market(prompt="Hi", payment="second_price", eps=1e-4, budget=5.0, max_bid=9.0)
    welcome = market.handle(b"p1", Hello(name="alice", id=42))
    assert isinstance(welcome, Welcome)
    assert (welcome.name, welcome.prompt, welcome.re, welcome.round, welcome.seq) == ("alice", "Hi", 42, 0, 0)
    assert welcome.mechanism.model_dump() == {
        "aggregation": "linear",
        "payment": "second_price",
        "mode": "sample",
        "temperature": 1.0,
        "eps": 1e-4,
    }
    assert (welcome.budget, welcome.spent, welcome.max_bid, welcome.heartbeat_interval) == (5.0, 0.0, 9.0, HEARTBEAT)
    assert welcome.market == market.market_id and len(market.market_id) == 12


def test_a_live_name_is_refused_to_another_peer_until_its_holder_goes_silent(
    make_market: Any, clock: FakeClock
) -> None:
    market = make_market()
    register(market, "alice")
    assert error_code(market.handle(b"intruder", Hello(name="alice"))) == "NAME_TAKEN"
    clock.advance(SILENCE)
    assert isinstance(market.handle(b"intruder", Hello(name="alice")), Welcome)
    assert error_code(market.handle(b"alice", Ping())) == "NOT_REGISTERED"


def test_liveness_follows_the_last_message(make_market: Any, clock: FakeClock) -> None:
    market = make_market()
    register(market, "a", "b")
    clock.advance(2 * HEARTBEAT)
    assert isinstance(market.handle(b"a", Ping()), Pong)
    clock.advance(2 * HEARTBEAT)
    assert market.live_agents() == ["a"]
    assert error_code(market.handle(b"stranger", Ping())) == "NOT_REGISTERED"


def test_everyone_has_bid_counts_live_agents_and_new_registrations(make_market: Any, clock: FakeClock) -> None:
    market = make_market()
    register(market, "a", "b")
    number = market.open_round().round
    assert not market.everyone_has_bid()  # no bid yet
    assert isinstance(market.handle(b"a", bid(number)), BidAccepted)
    assert not market.everyone_has_bid()
    register(market, "c")  # joins mid-round: the round now waits for c too
    assert isinstance(market.handle(b"b", bid(number)), BidAccepted)
    assert not market.everyone_has_bid()
    clock.advance(SILENCE)  # c never speaks again; a and b keep pinging
    market.handle(b"a", Ping())
    market.handle(b"b", Ping())
    assert market.everyone_has_bid()


def test_admission_checks_in_order_and_refusals_change_nothing(make_market: Any) -> None:
    market = make_market(budget=1.0, max_bid=5.0, max_support=2)
    register(market, "a")
    number = market.open_round().round
    too_big = bid(number, 6.0, x=0.2, y=0.3, z=0.5)
    # A wrong round is reported before anything about the bid itself.
    assert error_code(market.handle(b"a", bid(number + 1, 6.0, x=0.2, y=0.3, z=0.5))) == "WRONG_ROUND"
    assert error_code(market.handle(b"a", too_big)) == "INVALID_BID"
    assert error_code(market.handle(b"a", bid(number, 2.0, x=0.2, y=0.3, z=0.5))) == "INVALID_DISTRIBUTION"
    assert error_code(market.handle(b"a", bid(number, 2.0))) == "BUDGET_EXCEEDED"
    assert market.current is not None and market.current.bids == {}
    assert isinstance(market.handle(b"a", bid(number, 1.0)), BidAccepted)
    assert error_code(market.handle(b"a", bid(number, 6.0))) == "DUPLICATE_BID"
    market.close_round()
    assert error_code(market.handle(b"a", bid(number))) == "ROUND_CLOSED"
    assert market.spent == {"a": 1.0}


@pytest.mark.parametrize(
    "settings,bids,reason,rounds",
    [
        ({"max_tokens": 2}, [{"x": 1.0}], "max_tokens", 2),
        ({"stop_token": "."}, [{".": 1.0}], "stop_token", 1),
        ({"max_idle_rounds": 2}, [], "idle", 2),
    ],
)
def test_closing_reasons(
    make_market: Any, settings: dict[str, Any], bids: list[dict[str, float]], reason: str, rounds: int
) -> None:
    market = make_market(**settings)
    register(market, "a")
    broadcasts: list[RoundResult | MarketClosed] = []
    while market.closed is None:
        number = market.open_round().round
        for distribution in bids:
            market.handle(b"a", bid(number, **distribution))
        broadcasts = market.close_round()
    closed = broadcasts[-1]
    assert isinstance(closed, MarketClosed) and (closed.reason, closed.rounds) == (reason, rounds)
    assert error_code(market.handle(b"a", bid(rounds + 1))) == "MARKET_CLOSED"


def test_a_market_resumes_from_its_ledger(make_market: Any) -> None:
    first = make_market(prompt="P:", max_tokens=10)
    register(first, "a")
    for _ in range(3):
        number = first.open_round().round
        first.handle(b"a", bid(number, 2.0))
        first.close_round()
    unfinished = first.open_round()  # announced, never committed: lost in the "crash"
    first.ledger.close()

    again = make_market(prompt="P:", max_tokens=10)
    assert (again.last_round, again.text, again.spent) == (3, "P:xxx", {"a": 6.0})
    # seqs never repeat: the announced round_open's seq is skipped
    assert again.open_round().seq == unfinished.seq + 1
    sync = again.handle(b"late", SyncRequest(since_seq=0))
    assert isinstance(sync, SyncReply) and [r.round for r in sync.results] == [1, 2, 3]
    with pytest.raises(LedgerError, match="different payment"):
        make_market(prompt="P:", payment="second_price")


def test_sync_results_are_paged_by_bytes_and_always_make_progress(make_market: Any) -> None:
    market = make_market(max_tokens=5)
    register(market, "a")
    while market.closed is None:
        number = market.open_round().round
        market.handle(b"a", bid(number))
        market.close_round()
    one_result = len(encode(market.ledger.results_since(0, 1, 10**9)[0][0]))

    def page(max_bytes: int) -> tuple[list[int], bool]:
        results, more = market.ledger.results_since(0, 100, max_bytes)
        return [r.round for r in results], more

    assert page(2 * one_result + 1) == ([1, 2], True)
    assert page(1) == ([1], True)  # a result larger than the budget still goes, alone
    assert page(10**9) == ([1, 2, 3, 4, 5], False)
    assert market.ledger.results_since(0, 3, 10**9)[1] is True  # the count limit pages too

"""The exchange and its markets, driven in-process with a fake clock and a real SQLite ledger.

No sockets: requests go straight to :meth:`Exchange.handle`, the test moves the clock and ticks.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auctioneer.audit import audit_ledger
from auctioneer.exchange import FORGET_AFTER_HEARTBEATS, Exchange
from auctioneer.ledger import SCHEMA_VERSION, Ledger, LedgerError, lock_file, serving
from auctioneer.metrics import AuctioneerMetrics
from auctioneer.settings import MarketSpec, ServeSettings
from protocol import Distribution, decode
from protocol.critical_bid import REFERENCE_SPONSOR
from protocol.messages import (
    AccountStatus,
    BidAccepted,
    CloseMarket,
    Error,
    Hello,
    ListMarkets,
    MarketClosed,
    MarketEnded,
    MarketList,
    MarketOpened,
    MarketStatusReply,
    Message,
    OpenMarket,
    Ping,
    Pong,
    RoundOpen,
    RoundResult,
    SealedBid,
    SetBudget,
    SyncReply,
    SyncRequest,
    Welcome,
)

HEARTBEAT = 1.0
SILENCE = 3 * HEARTBEAT + 0.1  # longer than an agent stays live without a message
LOOPBACK = "127.0.0.1"


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
def make_exchange(tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    ledgers: list[Ledger] = []

    def make(**settings: Any) -> Exchange:
        ledger = Ledger(tmp_path / "exchange.db")
        ledgers.append(ledger)
        values = {"db": tmp_path / "exchange.db", "heartbeat_interval": HEARTBEAT, "seed": "ab" * 32, **settings}
        exchange = Exchange(ServeSettings.model_validate(values), ledger, clock)
        exchange.start()
        return exchange

    yield make
    for ledger in ledgers:
        ledger.close()


def bid(number: int, amount: float = 1.0, market: str | None = None, **distribution: float) -> SealedBid:
    return SealedBid(
        round=number, distribution=Distribution.from_mapping(distribution or {"x": 1.0}), bid=amount, market=market
    )


def error_code(reply: Message) -> str:
    assert isinstance(reply, Error), reply
    return reply.code


def sync(exchange: Exchange, request: SyncRequest) -> SyncReply:
    reply = exchange.handle(b"late", request)
    assert isinstance(reply, bytes), reply
    decoded = decode(reply)
    assert isinstance(decoded, SyncReply)
    return decoded


def register(exchange: Exchange, *names: str) -> None:
    """Register each name from a peer of the same name, proposing a resume secret of its own (the same
    after a restart)."""
    for name in names:
        secret = hashlib.sha256(name.encode()).hexdigest()
        assert isinstance(exchange.handle(name.encode(), Hello(name=name, resume=secret)), Welcome)


def tick(exchange: Exchange) -> list[Message]:
    exchange.tick()
    return drained(exchange)


def drained(exchange: Exchange) -> list[Message]:
    return [message for message, _ in exchange.drain()]


def opened(broadcasts: list[Message]) -> dict[str, int]:
    """market -> round number, of the rounds these broadcasts open."""
    return {m.market or "": m.round for m in broadcasts if isinstance(m, RoundOpen)}


def open_markets(exchange: Exchange, count: int, **settings: Any) -> list[str]:
    return [exchange.open_market(MarketSpec(settings={"prompt": f"q{k}:", **settings})).id for k in range(count)]


# --- registration and liveness ------------------------------------------------------------------


def test_welcome_describes_the_exchange_and_the_default_market(make_exchange: Any) -> None:
    exchange = make_exchange(prompt="Hi", payment="second_price", eps=1e-4, budget=5.0, max_bid=9.0)
    other = exchange.open_market(MarketSpec(settings={"prompt": "Other"}, agents=["bob"]))
    welcome = exchange.handle(b"p1", Hello(name="alice", id=42))
    assert isinstance(welcome, Welcome)
    assert (welcome.name, welcome.prompt, welcome.re, welcome.round, welcome.seq) == ("alice", "Hi", 42, 0, 0)
    assert welcome.mechanism is not None and welcome.mechanism.model_dump() == {
        "aggregation": "linear",
        "payment": "second_price",
        "mode": "sample",
        "temperature": 1.0,
        "eps": 1e-4,
    }
    assert (welcome.budget, welcome.spent, welcome.max_bid, welcome.heartbeat_interval) == (5.0, 0.0, 9.0, HEARTBEAT)
    assert welcome.market == exchange.default_market and len(welcome.market or "") == 12
    # alice is invited to the default market only: "Other" is limited to bob
    assert [m.id for m in welcome.markets] == [exchange.default_market]
    bob = exchange.handle(b"p2", Hello(name="bob"))
    assert isinstance(bob, Welcome) and {m.id for m in bob.markets} == {exchange.default_market, other.id}


def test_a_name_returns_only_with_its_resume_secret(make_exchange: Any, clock: FakeClock) -> None:
    exchange = make_exchange(prompt="")
    welcome = exchange.handle(b"alice", Hello(name="alice"))
    assert isinstance(welcome, Welcome) and welcome.resume is not None
    secret = welcome.resume
    assert error_code(exchange.handle(b"intruder", Hello(name="alice"))) == "NAME_TAKEN"
    clock.advance(SILENCE)  # silence does not free the name
    assert error_code(exchange.handle(b"intruder", Hello(name="alice"))) == "NAME_TAKEN"
    assert error_code(exchange.handle(b"intruder", Hello(name="alice", resume="0" * 64))) == "NAME_TAKEN"
    back = exchange.handle(b"alice-again", Hello(name="alice", resume=secret))
    assert isinstance(back, Welcome) and back.resume == secret
    assert error_code(exchange.handle(b"alice", Ping())) == "NOT_REGISTERED"  # the old connection lost it
    assert isinstance(exchange.handle(b"alice-again", Ping()), Pong)


def test_a_binding_is_durable_once_the_agent_bid(make_exchange: Any, clock: FakeClock) -> None:
    first = make_exchange(prompt="")
    secrets = {name: first.handle(name.encode(), Hello(name=name)).resume for name in ("payer", "idler")}
    number = opened(tick(first))[first.default_market or ""]
    assert isinstance(first.handle(b"payer", bid(number, 1.0)), BidAccepted)
    clock.advance(2.5)  # past the deadline (idler never bids)
    assert [r.bids for r in tick(first) if isinstance(r, RoundResult)] == [{"payer": 1.0}]
    first.ledger.close()
    again = make_exchange(prompt="")
    assert error_code(again.handle(b"mallory", Hello(name="payer"))) == "NAME_TAKEN"
    assert isinstance(again.handle(b"payer", Hello(name="payer", resume=secrets["payer"])), Welcome)
    # a name that never bid was never stored: after the restart its agent proposes its secret again
    assert isinstance(again.handle(b"idler", Hello(name="idler", resume=secrets["idler"])), Welcome)
    assert error_code(again.handle(b"mallory", Hello(name="idler"))) == "NAME_TAKEN"


def test_one_name_per_connection_and_a_cap_per_address(make_exchange: Any) -> None:
    exchange = make_exchange(prompt="", max_agents_per_address=2)
    assert isinstance(exchange.handle(b"p1", Hello(name="a"), address="10.0.0.1"), Welcome)
    assert error_code(exchange.handle(b"p1", Hello(name="b"), address="10.0.0.1")) == "LIMIT_REACHED"
    assert isinstance(exchange.handle(b"p2", Hello(name="b"), address="10.0.0.1"), Welcome)
    assert error_code(exchange.handle(b"p3", Hello(name="c"), address="10.0.0.1")) == "LIMIT_REACHED"
    assert isinstance(exchange.handle(b"p4", Hello(name="c"), address="10.0.0.2"), Welcome)


def test_silent_agents_are_forgotten_and_their_unused_names_freed(make_exchange: Any, clock: FakeClock) -> None:
    exchange = make_exchange(prompt="", max_agents_per_address=1)
    assert isinstance(exchange.handle(b"p1", Hello(name="ghost"), address=LOOPBACK), Welcome)
    clock.advance(FORGET_AFTER_HEARTBEATS * HEARTBEAT + 1)
    tick(exchange)
    assert "ghost" not in exchange.agents
    assert isinstance(exchange.handle(b"p2", Hello(name="ghost"), address=LOOPBACK), Welcome)


def test_liveness_follows_the_last_message(make_exchange: Any, clock: FakeClock) -> None:
    exchange = make_exchange(prompt="")
    register(exchange, "a", "b")
    clock.advance(2 * HEARTBEAT)
    assert isinstance(exchange.handle(b"a", Ping()), Pong)
    clock.advance(2 * HEARTBEAT)
    assert exchange.live_agents() == ["a"]
    assert error_code(exchange.handle(b"stranger", Ping())) == "NOT_REGISTERED"


# --- rounds -----------------------------------------------------------------------------------


def test_a_round_closes_early_once_every_live_participant_bid(make_exchange: Any, clock: FakeClock) -> None:
    exchange = make_exchange(prompt="", round_timeout=10.0)
    register(exchange, "a", "b")
    number = opened(tick(exchange))[exchange.default_market]
    assert isinstance(exchange.handle(b"a", bid(number)), BidAccepted)
    assert not exchange.has_due()
    register(exchange, "c")  # joins mid-round: the round now waits for c too
    assert isinstance(exchange.handle(b"b", bid(number)), BidAccepted)
    assert not exchange.has_due() and tick(exchange) == []
    clock.advance(SILENCE)  # c never speaks again; a and b keep pinging
    exchange.handle(b"a", Ping())
    exchange.handle(b"b", Ping())
    results = [m for m in tick(exchange) if isinstance(m, RoundResult)]
    assert [(r.round, sorted(r.bids)) for r in results] == [(number, ["a", "b"])]


def results(broadcasts: list[Message]) -> list[RoundResult]:
    return [m for m in broadcasts if isinstance(m, RoundResult)]


def test_a_registered_agent_that_never_bids_stops_holding_rounds(make_exchange: Any, clock: FakeClock) -> None:
    exchange = make_exchange(prompt="", round_timeout=10.0)
    register(exchange, "a", "silent")
    broadcasts = tick(exchange)
    for _ in range(2):  # the first rounds of a run wait for everyone live: to their deadline
        exchange.handle(b"a", bid(opened(broadcasts)[exchange.default_market or ""]))
        assert results(tick(exchange)) == []
        clock.advance(2.0)
        exchange.handle(b"silent", Ping())
        exchange.handle(b"a", Ping())
        clock.advance(8.1)
        exchange.handle(b"silent", Ping())
        exchange.handle(b"a", Ping())
        broadcasts = tick(exchange)
        assert len(results(broadcasts)) == 1
    # silent never bid: live, but not engaged; the round closes at a's bid
    exchange.handle(b"a", bid(opened(broadcasts)[exchange.default_market or ""]))
    assert exchange.has_due() and [r.bids for r in results(tick(exchange))] == [{"a": 1.0}]


def test_zero_bids_are_acknowledged_but_left_out_beside_a_positive_bid(make_exchange: Any) -> None:
    exchange = make_exchange(prompt="", payment="first_price")
    register(exchange, "payer", "free1", "free2")
    number = opened(tick(exchange))[exchange.default_market or ""]
    assert isinstance(exchange.handle(b"payer", bid(number, 1.0)), BidAccepted)
    for name in ("free1", "free2"):
        wide = {f"{name}.{k}": 0.25 for k in range(4)}
        assert isinstance(exchange.handle(name.encode(), bid(number, 0.0, **wide)), BidAccepted)
    (result,) = results(tick(exchange))
    assert (result.bids, result.payments, result.balances) == ({"payer": 1.0}, {"payer": 1.0}, {"payer": 1.0})
    assert result.distribution is not None and result.distribution.tokens == ["x"]
    assert [b.agent for b in next(exchange.ledger.rounds(exchange.default_market or "")).bids] == ["payer"]


def test_when_every_bid_is_zero_each_counts_equally(make_exchange: Any) -> None:
    exchange = make_exchange(prompt="", mode="greedy")
    register(exchange, "a", "b")
    number = opened(tick(exchange))[exchange.default_market or ""]
    exchange.handle(b"a", bid(number, 0.0, x=1.0))
    exchange.handle(b"b", bid(number, 0.0, y=1.0))
    (result,) = results(tick(exchange))
    assert result.bids == {"a": 0.0, "b": 0.0} and result.balances == {"a": 0.0, "b": 0.0}
    assert result.distribution is not None and result.distribution.as_mapping() == {"x": 0.5, "y": 0.5}


def test_a_rounds_vocabulary_is_capped_for_priced_and_for_zero_bids(make_exchange: Any) -> None:
    exchange = make_exchange(prompt="", max_round_tokens=3)
    register(exchange, "a", "b", "c", "d")
    number = opened(tick(exchange))[exchange.default_market or ""]
    assert isinstance(exchange.handle(b"a", bid(number, 1.0, x=0.5, y=0.5)), BidAccepted)
    refused = exchange.handle(b"b", bid(number, 1.0, z=0.5, w=0.5))
    assert error_code(refused) == "TOO_LARGE" and refused.field == "distribution"  # type: ignore[attr-defined]
    assert isinstance(exchange.handle(b"b", bid(number, 1.0, x=0.5, z=0.5)), BidAccepted)
    assert isinstance(exchange.handle(b"c", bid(number, 0.0, p=0.25, q=0.25, r=0.5)), BidAccepted)
    assert error_code(exchange.handle(b"d", bid(number, 0.0, s=1.0))) == "TOO_LARGE"
    assert exchange.accounts["b"].reserved == 1.0  # the refusal changed nothing


def test_the_cap_counts_distinct_tokens_exactly_once_the_supports_could_pass_it(make_exchange: Any) -> None:
    exchange = make_exchange(prompt="", max_round_tokens=5)
    register(exchange, "a", "b", "c", "d", "e")
    number = opened(tick(exchange))[exchange.default_market or ""]
    assert isinstance(exchange.handle(b"a", bid(number, 1.0, x=0.5, y=0.5)), BidAccepted)
    assert isinstance(exchange.handle(b"b", bid(number, 1.0, x=0.5, y=0.5)), BidAccepted)  # supports 4: not counted
    assert isinstance(exchange.handle(b"c", bid(number, 1.0, x=0.5, z=0.5)), BidAccepted)  # 6 > 5: {x, y, z}
    refused = exchange.handle(b"d", bid(number, 1.0, p=0.25, q=0.25, r=0.5))  # 3 + 3 new
    assert error_code(refused) == "TOO_LARGE" and "already has 3 distinct tokens" in refused.message  # type: ignore[attr-defined]
    assert isinstance(exchange.handle(b"d", bid(number, 1.0, p=0.5, x=0.5)), BidAccepted)  # 4 distinct
    assert isinstance(exchange.handle(b"e", bid(number, 1.0, q=0.5, z=0.5)), BidAccepted)  # 5: at the cap
    (result,) = results(tick(exchange))
    assert result.distribution is not None and set(result.distribution.as_mapping()) == {"x", "y", "z", "p", "q"}


def test_rounds_nobody_was_heard_in_do_not_end_a_market_as_idle(make_exchange: Any, clock: FakeClock) -> None:
    exchange = make_exchange(prompt="", max_idle_rounds=2, round_timeout=1.0)
    register(exchange, "a")
    broadcasts = tick(exchange)
    for _ in range(3):  # a is paused: rounds go by unattended while it still counts as live
        assert opened(broadcasts)
        clock.advance(1.05)
        broadcasts = tick(exchange)
        assert not any(isinstance(m, MarketClosed) for m in broadcasts)
    assert not opened(broadcasts) and not exchange.live_agents()  # nobody there: no round opens
    exchange.handle(b"a", Ping())  # a is back, and does not bid: now rounds are idle
    broadcasts = tick(exchange)
    for _ in range(2):
        clock.advance(0.5)
        exchange.handle(b"a", Ping())
        clock.advance(0.55)
        broadcasts = tick(exchange)
    assert [m.reason for m in broadcasts if isinstance(m, MarketClosed)] == ["idle"]


def test_admission_checks_in_order_and_refusals_change_nothing(make_exchange: Any) -> None:
    exchange = make_exchange(prompt="", budget=1.0, max_bid=5.0, max_support=2)
    register(exchange, "a")
    number = opened(tick(exchange))[exchange.default_market]
    too_big = bid(number, 6.0, x=0.2, y=0.3, z=0.5)
    # A wrong round is reported before anything about the bid itself.
    assert error_code(exchange.handle(b"a", bid(number + 1, 6.0, x=0.2, y=0.3, z=0.5))) == "WRONG_ROUND"
    assert error_code(exchange.handle(b"a", too_big)) == "INVALID_BID"
    assert error_code(exchange.handle(b"a", bid(number, 2.0, x=0.2, y=0.3, z=0.5))) == "INVALID_DISTRIBUTION"
    assert error_code(exchange.handle(b"a", bid(number, 2.0))) == "BUDGET_EXCEEDED"
    market = exchange.markets[exchange.default_market or ""]
    assert market.current is not None and market.current.bids == {}
    assert exchange.accounts["a"].reserved == 0.0
    assert isinstance(exchange.handle(b"a", bid(number, 1.0)), BidAccepted)
    assert error_code(exchange.handle(b"a", bid(number, 6.0))) == "DUPLICATE_BID"
    assert exchange.accounts["a"].reserved == 1.0
    tick(exchange)
    assert error_code(exchange.handle(b"a", bid(number))) == "ROUND_CLOSED"
    assert (exchange.accounts["a"].spent, exchange.accounts["a"].reserved) == (1.0, 0.0)


@pytest.mark.parametrize(
    "settings,bids,reason,rounds",
    [
        ({"max_tokens": 2}, [{"x": 1.0}], "max_tokens", 2),
        ({"stop_token": "."}, [{".": 1.0}], "stop_token", 1),
        ({"max_idle_rounds": 2}, [], "idle", 2),
    ],
)
def test_closing_reasons(
    make_exchange: Any,
    clock: FakeClock,
    settings: dict[str, Any],
    bids: list[dict[str, float]],
    reason: str,
    rounds: int,
) -> None:
    exchange = make_exchange(prompt="", **settings)
    register(exchange, "a")
    broadcasts = tick(exchange)
    while not exchange.finished:
        for market, number in opened(broadcasts).items():
            for distribution in bids:
                exchange.handle(b"a", bid(number, market=market, **distribution))
        clock.advance(2.5)  # past every deadline
        exchange.handle(b"a", Ping())
        broadcasts = tick(exchange)
    closed = next(m for m in broadcasts if isinstance(m, MarketClosed))
    ended = next(m for m in broadcasts if isinstance(m, MarketEnded))
    assert (closed.reason, closed.rounds, ended.reason) == (reason, rounds, reason)
    assert error_code(exchange.handle(b"a", bid(rounds + 1))) == "MARKET_CLOSED"


def test_an_exchange_resumes_from_its_ledger(make_exchange: Any) -> None:
    first = make_exchange(prompt="P:", max_tokens=10)
    register(first, "a")
    broadcasts = tick(first)
    for _ in range(3):
        first.handle(b"a", bid(opened(broadcasts)[first.default_market or ""], 2.0))
        broadcasts = tick(first)
    unfinished = next(m for m in broadcasts if isinstance(m, RoundOpen))  # announced, never committed
    first.ledger.close()

    again = make_exchange(prompt="P:", max_tokens=10)
    market = again.markets[again.default_market or ""]
    assert (market.last_round, market.text, market.balances) == (3, "P:xxx", {"a": 6.0})
    assert again.accounts["a"].spent == 6.0
    register(again, "a")
    # seqs never repeat: the announced round_open's seq is skipped
    assert [m.seq for m in tick(again) if isinstance(m, RoundOpen)] == [unfinished.seq + 1]
    assert [r.round for r in sync(again, SyncRequest(since_seq=0)).results] == [1, 2, 3]
    with pytest.raises(LedgerError, match="different payment"):
        make_exchange(prompt="P:", payment="second_price")


def test_sync_results_are_paged_by_bytes_and_always_make_progress(make_exchange: Any) -> None:
    exchange = make_exchange(prompt="", max_tokens=5)
    register(exchange, "a")
    broadcasts = tick(exchange)
    while not exchange.finished:
        for number in opened(broadcasts).values():
            exchange.handle(b"a", bid(number))
        broadcasts = tick(exchange)
    market = exchange.default_market or ""
    one_result = len(exchange.ledger.results_since(market, 0, 1, 10**9)[0][0])

    def page(max_bytes: int) -> tuple[list[int], bool]:
        results, more = exchange.ledger.results_since(market, 0, 100, max_bytes)
        return [decode(r).round for r in results], more  # type: ignore[attr-defined]

    assert page(2 * one_result + 1) == ([1, 2], True)
    assert page(1) == ([1], True)  # a result larger than the budget still goes, alone
    assert page(10**9) == ([1, 2, 3, 4, 5], False)
    assert exchange.ledger.results_since(market, 0, 3, 10**9)[1] is True  # the count limit pages too


# --- many markets ------------------------------------------------------------------------------


def test_rounds_that_close_together_commit_in_one_transaction(make_exchange: Any) -> None:
    exchange = make_exchange(max_tokens=3)
    register(exchange, "a", "b")
    markets = open_markets(exchange, 20)
    commits_before = exchange.ledger.commits()
    for market, number in opened(tick(exchange)).items():
        for agent in ("a", "b"):
            assert isinstance(exchange.handle(agent.encode(), bid(number, 1.0, market)), BidAccepted)
    results = [m for m in tick(exchange) if isinstance(m, RoundResult)]
    assert sorted(r.market or "" for r in results) == sorted(markets)
    assert exchange.ledger.commits() == commits_before + 1  # one fsync for twenty markets


def test_a_bid_reserves_what_its_markets_payment_rule_can_charge(make_exchange: Any, clock: FakeClock) -> None:
    # Two agents spend their whole budget of 4 in a first-price market, then trade in a free one.
    exchange = make_exchange(budget=4.0, payment="first_price", max_tokens=2, min_agents=2)
    register(exchange, "a1", "a2")
    (paid,) = open_markets(exchange, 1)
    for _ in range(2):
        number = opened(tick(exchange))[paid]
        for agent in ("a1", "a2"):
            assert isinstance(exchange.handle(agent.encode(), bid(number, 2.0, paid)), BidAccepted)
    tick(exchange)
    assert exchange.accounts["a1"].remaining == exchange.accounts["a2"].remaining == 0.0
    free = exchange.open_market(MarketSpec(settings={"prompt": "free:", "payment": "none"}, agents=["a1", "a2"])).id
    number = opened(tick(exchange))[free]
    for agent in ("a1", "a2"):
        assert isinstance(exchange.handle(agent.encode(), bid(number, 3.0, free)), BidAccepted)
        assert exchange.accounts[agent].reserved == 0.0  # `none` never charges: nothing is held
    results = [m for m in tick(exchange) if isinstance(m, RoundResult) and m.market == free]
    assert results[0].bids == {"a1": 3.0, "a2": 3.0} and results[0].payments == {"a1": 0.0, "a2": 0.0}
    # In a paying market the same bid holds its amount, and a spent budget refuses it.
    other = open_markets(exchange, 1, payment="second_price")[0]
    number = opened(tick(exchange))[other]
    assert error_code(exchange.handle(b"a1", bid(number, 3.0, other))) == "BUDGET_EXCEEDED"


def test_a_budget_holds_across_markets_closing_in_the_same_instant(make_exchange: Any, clock: FakeClock) -> None:
    exchange = make_exchange(budget=5.0, payment="first_price", max_tokens=2)
    register(exchange, "a")
    markets = open_markets(exchange, 4)
    rounds = opened(tick(exchange))
    answers = [exchange.handle(b"a", bid(rounds[market], 2.0, market)) for market in markets]
    assert [type(a).__name__ for a in answers] == ["BidAccepted", "BidAccepted", "Error", "Error"]
    assert {error_code(a) for a in answers[2:]} == {"BUDGET_EXCEEDED"}
    assert exchange.accounts["a"].reserved == 4.0
    clock.advance(2.5)  # every round closes at its deadline, in one tick: a pays 4, reserves nothing
    exchange.handle(b"a", Ping())
    rounds = opened(tick(exchange))
    account = exchange.accounts["a"]
    assert (account.spent, account.reserved, account.remaining) == (4.0, 0.0, 1.0)
    assert exchange.ledger.accounts()["a"] == (5.0, 0.0, 4.0)
    assert error_code(exchange.handle(b"a", bid(rounds[markets[0]], 2.0, markets[0]))) == "BUDGET_EXCEEDED"
    assert isinstance(exchange.handle(b"a", bid(rounds[markets[0]], 1.0, markets[0])), BidAccepted)
    verdicts, over_budget = audit_ledger(exchange.ledger)
    assert all(v.ok for v in verdicts) and over_budget == []


def test_markets_limited_to_named_agents(make_exchange: Any) -> None:
    exchange = make_exchange()
    register(exchange, "a", "b")
    only_b = exchange.open_market(MarketSpec(settings={"prompt": "B:"}, agents=["b"])).id
    number = opened(tick(exchange))[only_b]
    assert error_code(exchange.handle(b"a", bid(number, 1.0, only_b))) == "NOT_INVITED"
    assert isinstance(exchange.handle(b"b", bid(number, 1.0, only_b)), BidAccepted)
    assert [r.bids for r in tick(exchange) if isinstance(r, RoundResult)] == [{"b": 1.0}]


def test_a_live_reference_agent_pulls_as_p0_and_never_pays(make_exchange: Any) -> None:
    exchange = make_exchange(payment="first_price", mode="greedy", reference_weight=3.0, budget=10.0)
    register(exchange, "publisher", "advertiser")
    market = exchange.open_market(MarketSpec(settings={"prompt": "Q:"}, reference_agent="publisher")).id
    number = opened(tick(exchange))[market]
    assert isinstance(exchange.handle(b"publisher", bid(number, 99.0, market, news=1.0)), BidAccepted)
    assert isinstance(exchange.handle(b"advertiser", bid(number, 1.0, market, ad=1.0)), BidAccepted)
    assert exchange.accounts["publisher"].reserved == 0.0
    (result,) = [m for m in tick(exchange) if isinstance(m, RoundResult)]
    # q = (3 news + 1 ad) / 4: the reference's weight decides; only the advertiser pays.
    assert result.token == "news" and result.payments == {"advertiser": 1.0}
    assert result.distribution is not None and result.distribution.as_mapping() == {"ad": 0.25, "news": 0.75}
    assert result.sponsors == {REFERENCE_SPONSOR: 1.0} and result.bids == {"advertiser": 1.0}
    stored = next(exchange.ledger.rounds(market))
    assert [(b.agent, b.bid, b.reference) for b in stored.bids] == [
        ("advertiser", 1.0, False),
        ("publisher", 3.0, True),
    ]
    verdicts, _ = audit_ledger(exchange.ledger)
    assert all(v.ok for v in verdicts)


# --- operators -------------------------------------------------------------------------------


def test_operators_open_and_close_markets_others_may_not(make_exchange: Any) -> None:
    exchange = make_exchange(payment="none")
    register(exchange, "a")
    request = OpenMarket(settings={"prompt": "Hawaii:", "max_tokens": 9}, market="hawaii", id=3)
    assert error_code(exchange.handle(b"op", request, address="10.0.0.7")) == "UNAUTHORIZED"
    reply = exchange.handle(b"op", request, address=LOOPBACK)
    assert isinstance(reply, MarketStatusReply) and reply.re == 3
    info = reply.status.market
    assert (info.id, info.rules.prompt, info.rules.max_tokens, info.rules.payment) == ("hawaii", "Hawaii:", 9, "none")
    notices = drained(exchange)
    assert [type(n) for n in notices] == [MarketOpened] and notices[0].seq == exchange.exchange_seq
    bad = exchange.handle(b"op", OpenMarket(settings={"payment": "vickrey"}), address=LOOPBACK)
    assert error_code(bad) == "INVALID_SETTINGS" and "vickrey" in bad.message  # type: ignore[attr-defined]
    assert error_code(exchange.handle(b"op", request, address=LOOPBACK)) == "INVALID_SETTINGS"  # id in use
    metrics = AuctioneerMetrics(exchange)
    announced = tick(exchange)
    for message in announced:
        metrics.broadcast(message)
    number = opened(announced)["hawaii"]
    assert metrics.rounds_in_progress == 1
    exchange.handle(b"a", bid(number, 1.0, "hawaii"))
    closed = exchange.handle(b"op", CloseMarket(market="hawaii"), address=LOOPBACK)
    assert isinstance(closed, MarketStatusReply) and closed.status.closed == "operator"
    assert exchange.accounts["a"].reserved == 0.0  # the abandoned round's bid is released
    ended = drained(exchange)
    assert [type(n).__name__ for n in ended] == ["MarketClosed", "MarketEnded"]
    for message in ended:
        metrics.broadcast(message)
    assert metrics.rounds_in_progress == 0  # the abandoned round is not kept waiting for a result
    closed_sync = sync(exchange, SyncRequest(market="hawaii"))
    assert closed_sync.closed is not None and closed_sync.closed.reason == "operator"
    listing = exchange.handle(b"anyone", ListMarkets())
    assert isinstance(listing, MarketList) and [(s.market.id, s.closed) for s in listing.markets] == [
        ("hawaii", "operator")
    ]


def test_operators_set_budgets_that_hold_across_restarts(make_exchange: Any, clock: FakeClock) -> None:
    exchange = make_exchange(prompt="", budget=3.0, payment="first_price")
    register(exchange, "a")
    number = opened(tick(exchange))[exchange.default_market]
    assert isinstance(exchange.handle(b"a", bid(number, 2.0)), BidAccepted)
    clock.advance(2.5)
    number = opened(tick(exchange))[exchange.default_market]  # a paid 2 of its 3
    assert isinstance(exchange.handle(b"a", bid(number, 0.5)), BidAccepted)  # and reserves 0.5
    assert error_code(exchange.handle(b"op", SetBudget(agent="a", budget=10.0), address="10.0.0.7")) == "UNAUTHORIZED"
    below = exchange.handle(b"op", SetBudget(agent="a", budget=2.4), address=LOOPBACK)
    assert error_code(below) == "INVALID_SETTINGS" and "spent (2.0)" in below.message  # type: ignore[attr-defined]
    assert exchange.accounts["a"].budget == 3.0 and exchange.ledger.operator_budgets() == {}  # refusals change nothing

    raised = exchange.handle(b"op", SetBudget(agent="a", budget=10.0, id=4), address=LOOPBACK)
    assert isinstance(raised, AccountStatus) and raised.re == 4
    assert (raised.agent, raised.budget, raised.spent, raised.reserved) == ("a", 10.0, 2.0, 0.5)
    assert exchange.ledger.accounts()["a"] == (10.0, 0.5, 2.0)  # durable as soon as it is set
    pong = exchange.handle(b"a", Ping())
    assert isinstance(pong, Pong) and (pong.budget, pong.spent, pong.reserved) == (10.0, 2.0, 0.5)  # a learns of it
    other = exchange.open_market(MarketSpec(settings={"prompt": "M:"}, id="m2")).id
    number = opened(tick(exchange))[other]
    assert error_code(exchange.handle(b"a", bid(number, 7.6, other))) == "BUDGET_EXCEEDED"  # 2 + 0.5 + 7.6 > 10
    assert isinstance(exchange.handle(b"a", bid(number, 7.5, other)), BidAccepted)
    unlimited = exchange.handle(b"op", SetBudget(agent="newcomer", budget=None), address=LOOPBACK)
    assert isinstance(unlimited, AccountStatus) and unlimited.budget is None  # set before it ever registered

    restarted = make_exchange(prompt="", budget=3.0, payment="first_price")  # the config still says 3
    assert restarted.accounts["a"].budget == 10.0 and restarted.accounts["newcomer"].budget is None
    assert restarted.accounts["b"].budget == 3.0
    verdicts, over_budget = audit_ledger(restarted.ledger)
    assert all(v.ok for v in verdicts) and over_budget == []


def test_with_curve_only_named_keys_operate(make_exchange: Any, tmp_path: Path) -> None:
    exchange = make_exchange(operators=["ops"])
    exchange.settings = exchange.settings.model_copy(
        update={"curve_secret": tmp_path / "s", "authorized_keys": tmp_path}
    )
    request = OpenMarket(settings={"prompt": "x"})
    assert error_code(exchange.handle(b"p", request, identity="mallory", address=LOOPBACK)) == "UNAUTHORIZED"
    assert isinstance(exchange.handle(b"p", request, identity="ops", address="10.1.2.3"), MarketStatusReply)


def test_requests_without_a_market_go_to_the_default_one(make_exchange: Any) -> None:
    empty = make_exchange()
    register(empty, "a")
    assert error_code(empty.handle(b"a", bid(1))) == "UNKNOWN_MARKET"
    assert error_code(empty.handle(b"a", bid(1, market="nowhere"))) == "UNKNOWN_MARKET"
    assert error_code(empty.handle(b"a", SyncRequest())) == "UNKNOWN_MARKET"  # type: ignore[arg-type]
    assert not empty.finished  # an empty exchange waits for operators


def test_a_restart_reads_open_markets_and_only_the_last_closed_ones(
    make_exchange: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("auctioneer.exchange.RECENT_MARKETS", 3)
    exchange = make_exchange(stay=True)
    for k in range(6):
        exchange.open_market(MarketSpec(settings={"prompt": f"Q{k}:"}, id=f"q{k}"))
        clock.advance(1.0)  # markets are listed by when they opened
        if k < 5:
            exchange.close_market(f"q{k}")
    restarted = make_exchange(stay=True)
    listing = restarted.handle(b"anyone", ListMarkets())
    assert isinstance(listing, MarketList)
    assert [(s.market.id, s.closed) for s in listing.markets] == [
        ("q5", None),
        ("q2", "operator"),
        ("q3", "operator"),
        ("q4", "operator"),
    ]
    assert list(restarted.markets) == ["q5"]
    register(restarted, "a")
    assert restarted.knows_market("q0") and not restarted.knows_market("q9")  # older ones are still known
    assert error_code(restarted.handle(b"a", bid(1, 1.0, "q0"))) == "MARKET_CLOSED"
    assert error_code(restarted.handle(b"a", bid(1, 1.0, "q9"))) == "UNKNOWN_MARKET"


def test_what_agents_spent_is_kept_in_their_accounts_and_checked_by_the_audit(
    make_exchange: Any, clock: FakeClock, tmp_path: Path
) -> None:
    exchange = make_exchange(budget=5.0, payment="first_price", max_tokens=1)
    register(exchange, "a", "b")
    markets = open_markets(exchange, 3)
    rounds = opened(tick(exchange))
    for market in markets:
        for agent, amount in (("a", 1.5), ("b", 0.5)):
            assert isinstance(exchange.handle(agent.encode(), bid(rounds[market], amount, market)), BidAccepted)
    tick(exchange)
    paid = exchange.ledger.spent()
    assert paid["a"] > 0 and paid["b"] > 0
    assert {agent: account.spent for agent, account in exchange.ledger.accounts().items()} == pytest.approx(paid)

    # A ledger of schema 2 (no spent column, payments indexed by agent) gains the column at open,
    # filled from its payments, and loses the index.
    with sqlite3.connect(tmp_path / "exchange.db") as db:
        db.execute("ALTER TABLE accounts DROP COLUMN spent")
        db.execute("CREATE INDEX payments_by_agent ON payments(agent)")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    restarted = make_exchange()
    assert restarted.accounts["a"].spent == pytest.approx(paid["a"])
    assert restarted.accounts["b"].spent == pytest.approx(paid["b"])
    assert restarted.ledger.accounts()["a"].spent == pytest.approx(paid["a"])
    with sqlite3.connect(tmp_path / "exchange.db") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (SCHEMA_VERSION,)
        assert not db.execute("SELECT name FROM sqlite_master WHERE name = 'payments_by_agent'").fetchall()

    # A restart reads the accounts, not the payments: an account that disagrees with them is what
    # the exchange goes on from, and what the audit reports.
    with sqlite3.connect(tmp_path / "exchange.db") as db:
        db.execute("UPDATE accounts SET spent = 0.25 WHERE agent = 'b'")
    assert make_exchange().accounts["b"].spent == 0.25
    # A ledger from a later version is refused, not relabelled.
    with sqlite3.connect(tmp_path / "exchange.db") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(int(SCHEMA_VERSION) + 1),))
    with pytest.raises(LedgerError, match="written by a newer token-auction"):
        Ledger(tmp_path / "exchange.db")
    with sqlite3.connect(tmp_path / "exchange.db") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))
    _, problems = audit_ledger(restarted.ledger)
    assert problems == [f"b's account records 0.25 spent, its payments add up to {paid['b']:.12g}"]


# Schema 4's round tables, keyed by market and round (what ledgers written before schema 5 hold).
SCHEMA_4_ROUND_TABLES = """
CREATE TABLE rounds (
    market TEXT NOT NULL REFERENCES markets(market), round INTEGER NOT NULL, token TEXT, seed BLOB NOT NULL,
    seed_commitment TEXT NOT NULL, result_seq INTEGER NOT NULL, opened_at REAL NOT NULL, committed_at REAL NOT NULL,
    result BLOB NOT NULL, PRIMARY KEY (market, round));
CREATE TABLE bids (
    market TEXT NOT NULL, round INTEGER NOT NULL, agent TEXT NOT NULL, bid REAL NOT NULL, tokens BLOB NOT NULL,
    probs BLOB NOT NULL, reference INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (market, round, agent),
    FOREIGN KEY (market, round) REFERENCES rounds(market, round));
CREATE TABLE payments (
    market TEXT NOT NULL, round INTEGER NOT NULL, agent TEXT NOT NULL, amount REAL NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (market, round, agent), FOREIGN KEY (market, round) REFERENCES rounds(market, round));
CREATE TABLE sponsors (
    market TEXT NOT NULL, round INTEGER NOT NULL, sponsor TEXT NOT NULL, share REAL NOT NULL,
    PRIMARY KEY (market, round, sponsor), FOREIGN KEY (market, round) REFERENCES rounds(market, round));
"""


def as_schema_4(path: Path) -> None:
    """Rewrite the ledger at ``path`` in schema 4's layout, rows committed in the same order."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA foreign_keys=OFF")
        for table in ("bids", "payments", "sponsors", "rounds"):
            db.execute(f"ALTER TABLE {table} RENAME TO new_{table}")
        for (trigger,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f"DROP TRIGGER {trigger}")
        db.executescript(SCHEMA_4_ROUND_TABLES)
        db.execute(
            "INSERT INTO rounds SELECT market, round, token, seed, seed_commitment, result_seq, opened_at,"
            " committed_at, result FROM new_rounds ORDER BY id"
        )
        for table, columns in (("bids", "agent, bid, tokens, probs, reference"), ("payments", "agent, amount"),
                               ("sponsors", "sponsor, share")):  # fmt: skip
            db.execute(
                f"INSERT INTO {table} SELECT market, round, {columns} FROM new_{table} JOIN new_rounds ON round_id = id"
            )
        for table in ("bids", "payments", "sponsors", "rounds"):
            db.execute(f"DROP TABLE new_{table}")
        db.execute("UPDATE meta SET value = '4' WHERE key = 'schema'")


def test_a_ledger_keyed_by_market_and_round_is_renumbered_when_it_opens(make_exchange: Any, tmp_path: Path) -> None:
    exchange = make_exchange(max_tokens=3)
    register(exchange, "a", "b")
    markets = open_markets(exchange, 3)
    for _ in range(2):  # the markets' rounds interleave in the ledger
        rounds = opened(tick(exchange))
        for market in markets:
            for agent, amount in (("a", 1.0), ("b", 2.0)):
                assert isinstance(exchange.handle(agent.encode(), bid(rounds[market], amount, market, x=0.5, y=0.5)),
                                  BidAccepted)  # fmt: skip
    tick(exchange)
    before = {market: exchange.ledger.document(market) for market in markets}
    exchange.ledger.close()
    as_schema_4(tmp_path / "exchange.db")
    with sqlite3.connect(tmp_path / "exchange.db") as db:
        committed_order = db.execute("SELECT market, round FROM rounds ORDER BY rowid").fetchall()
    assert sorted(number for _, number in committed_order) == [1, 1, 1, 2, 2, 2]

    restarted = make_exchange(max_tokens=3)
    assert {market: restarted.ledger.document(market) for market in markets} == before
    verdicts, problems = audit_ledger(restarted.ledger)
    assert len(verdicts) == 6 and all(v.ok for v in verdicts) and problems == []
    with sqlite3.connect(tmp_path / "exchange.db") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (SCHEMA_VERSION,)
        numbered = db.execute("SELECT id, market, round FROM rounds ORDER BY id").fetchall()
        assert [(market, number) for _, market, number in numbered] == committed_order
        assert [row[0] for row in numbered] == list(range(1, 7))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):  # its guards are back
            db.execute("UPDATE payments SET amount = 0")
    # The market goes on: its next round is numbered after the renumbered ones.
    register(restarted, "a", "b")
    rounds = opened(tick(restarted))
    for agent in (b"a", b"b"):
        assert isinstance(restarted.handle(agent, bid(rounds[markets[0]], 1.0, markets[0])), BidAccepted)
    tick(restarted)
    assert [r.round for r in restarted.ledger.rounds(markets[0])] == [1, 2, 3]
    assert restarted.ledger.round_count() == 7


def test_a_ledger_whose_rows_name_no_round_is_refused_not_renumbered(make_exchange: Any, tmp_path: Path) -> None:
    exchange = make_exchange(max_tokens=1)
    register(exchange, "a")
    market = open_markets(exchange, 1)[0]
    number = opened(tick(exchange))[market]
    assert isinstance(exchange.handle(b"a", bid(number, 1.0, market)), BidAccepted)
    tick(exchange)
    exchange.ledger.close()
    path = tmp_path / "exchange.db"
    as_schema_4(path)
    with sqlite3.connect(path) as db:  # a hand-edited file: a payment for a round it does not hold
        db.execute("INSERT INTO payments VALUES (?, 99, 'mallory', 1.0)", (market,))
    with pytest.raises(LedgerError, match="1 of its payments name no committed round; nothing was changed"):
        Ledger(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("4",)
        assert db.execute("SELECT COUNT(*) FROM payments WHERE agent = 'mallory'").fetchone() == (1,)
        assert "round_id" not in {row[1] for row in db.execute("PRAGMA table_info(payments)")}


def test_a_ledger_an_earlier_exchange_still_serves_is_not_renumbered_under_it(
    make_exchange: Any, tmp_path: Path
) -> None:
    exchange = make_exchange(prompt="P:")
    exchange.ledger.close()
    path = tmp_path / "exchange.db"
    as_schema_4(path)
    held = os.open(lock_file(path), os.O_RDWR | os.O_CREAT)  # what an exchange of 0.2 before schema 5 holds
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(LedgerError, match="being served by an exchange of an earlier token-auction"):
            Ledger(path)
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("4",)
    finally:
        os.close(held)
    with serving(path), Ledger(path) as ledger:  # once it stopped, this version's exchange renumbers it
        assert ledger.market_count() == 1
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (SCHEMA_VERSION,)


def test_every_committed_row_is_append_only(make_exchange: Any, clock: FakeClock) -> None:
    exchange = make_exchange(prompt="", max_tokens=1)
    register(exchange, "a")
    number = opened(tick(exchange))[exchange.default_market]
    assert isinstance(exchange.handle(b"a", bid(number, 1.0)), BidAccepted)
    tick(exchange)
    exchange.ledger.close()
    with contextlib.closing(sqlite3.connect(exchange.settings.db, isolation_level=None)) as db:
        for table in ("rounds", "bids", "payments", "sponsors"):
            assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] >= 1, table
            for change in (
                f"UPDATE {table} SET round_id = round_id" if table != "rounds" else "UPDATE rounds SET round = round",
                f"DELETE FROM {table}",
            ):
                with pytest.raises(sqlite3.IntegrityError, match=f"{table} are append-only"):
                    db.execute(change)

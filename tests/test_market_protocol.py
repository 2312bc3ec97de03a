"""The market socket and the feed at protocol level, against a live auctioneer process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import zmq.asyncio

from agent_client import AgentRuntime, StaticAgent
from agent_client.agent import RoundContext
from protocol.client import FeedFollower, MarketClient
from protocol.messages import (
    BidAccepted,
    Error,
    Hello,
    MarketClosed,
    Ping,
    Pong,
    RoundResult,
    SealedBid,
    SyncReply,
    SyncRequest,
    Welcome,
)
from protocol.topics import market_topic, subscription
from tests.helpers import BID, MarketRun, RawPeer, committed_rounds, open_round, read_ledger, static_agent, wait_until


@pytest.fixture
def peer(market_run: MarketRun) -> Iterator[RawPeer]:
    raw = RawPeer(market_run.market)
    try:
        yield raw
    finally:
        raw.close()


def test_duplicate_late_and_unregistered_bids_are_refused(market_run: MarketRun, peer: RawPeer) -> None:
    # A long heartbeat keeps the silent second agent "live", so rounds wait for their deadline.
    market_run.serve("--min-agents", "2", "--round-timeout", "1.5", "--max-tokens", "3", "--heartbeat", "5")
    assert isinstance(peer.request(SealedBid(round=1, distribution=BID, bid=1.0)), Error)
    welcome = peer.request(Hello(name="solo", id=5))
    assert isinstance(welcome, Welcome) and welcome.re == 5 and welcome.prompt == ""
    silent = RawPeer(market_run.market)
    assert isinstance(silent.request(Hello(name="silent")), Welcome)
    announcement = open_round(peer)
    number = announcement.round
    accepted = peer.request(SealedBid(round=number, distribution=BID, bid=1.0, id=9))
    assert isinstance(accepted, BidAccepted) and accepted.re == 9
    duplicate = peer.request(SealedBid(round=number, distribution=BID, bid=2.0))
    assert isinstance(duplicate, Error) and duplicate.code == "DUPLICATE_BID"
    future = peer.request(SealedBid(round=number + 5, distribution=BID, bid=1.0))
    assert isinstance(future, Error) and future.code == "WRONG_ROUND"
    wait_until(lambda: committed_rounds(market_run.db) >= number, what="round commit")
    late = peer.request(SealedBid(round=number, distribution=BID, bid=1.0))
    assert isinstance(late, Error) and late.code == "ROUND_CLOSED"
    stranger = RawPeer(market_run.market)
    try:
        refused = stranger.request(SealedBid(round=number + 1, distribution=BID, bid=1.0))
        assert isinstance(refused, Error) and refused.code == "NOT_REGISTERED"
        assert isinstance(stranger.request(Ping()), Error)
    finally:
        stranger.close()
        silent.close()
    assert isinstance(peer.request(Ping()), Pong)
    ledger = read_ledger(market_run.db)
    assert ledger["rounds"][number - 1]["bids"] == {"solo": {"bid": 1.0, "distribution": {"x": 1.0}}}


def test_a_second_live_connection_cannot_take_a_name(market_run: MarketRun, peer: RawPeer) -> None:
    market_run.serve("--min-agents", "5")
    assert isinstance(peer.request(Hello(name="alice")), Welcome)
    other = RawPeer(market_run.market)
    try:
        taken = other.request(Hello(name="alice"))
        assert isinstance(taken, Error) and taken.code == "NAME_TAKEN"
    finally:
        other.close()


def test_a_req_socket_envelope_is_accepted(market_run: MarketRun) -> None:
    from protocol import decode, encode

    market_run.serve("--min-agents", "5")
    context = zmq.Context()
    req = context.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(market_run.market)
    try:
        req.send(encode(SyncRequest()))
        assert req.poll(10_000)
        assert isinstance(decode(req.recv()), SyncReply)
    finally:
        req.close()
        context.term()


class TokensSeen(StaticAgent):
    """Remembers the tokens it was shown with the last result."""

    tokens: tuple[str, ...] = ()

    def observe(self, result: RoundResult, context: RoundContext) -> None:
        self.tokens = context.tokens


async def test_late_joiner_catches_up_and_bids(market_run: MarketRun) -> None:
    market_run.serve("--min-agents", "1", "--max-tokens", "300", "--prompt", "P:")
    market_run.agent("early", *static_agent("a=1", 1))
    await asyncio.to_thread(wait_until, lambda: committed_rounds(market_run.db) >= 5, 30.0, "five rounds")
    agent = TokensSeen({"b": 1.0}, 3.0)
    runtime = AgentRuntime(agent, "late", market_run.market, market_run.feed)
    whole = await asyncio.wait_for(runtime.run(), 60)
    ledger = read_ledger(market_run.db)
    report = whole.only()
    assert report.closed_reason == "max_tokens"
    assert report.text == ledger["text"]
    # The tokens before it joined come from the sync's snapshot, the rest from the results it applied.
    assert list(agent.tokens) == [r["token"] for r in ledger["rounds"] if r["token"]]
    joined = min(n for n, r in report.rounds.items() if r.status == "accepted")
    assert joined > 5
    assert all("late" in r["bids"] for r in ledger["rounds"][joined:])
    assert whole.spent == pytest.approx(ledger["balances"]["late"])
    assert whole.verification_failures == 0


async def test_subscriber_that_missed_broadcasts_resyncs(market_run: MarketRun, peer: RawPeer) -> None:
    # A pause of 0.3 s between rounds: the follower's link is down for about three of them.
    market_run.serve("--min-agents", "1", "--max-tokens", "12", "--round-pause", "0.3", "--heartbeat", "5")
    welcome = peer.request(Hello(name="observer"))
    assert isinstance(welcome, Welcome) and welcome.market is not None
    market_run.agent("steady", *static_agent("a=0.5,b=0.5", 1))
    context = zmq.asyncio.Context()
    client = MarketClient(context, market_run.market)
    client.connect()
    follower = FeedFollower(context, market_run.feed, client)
    follower.follow(welcome.market)
    seen: list[int] = []
    snapshots = 0
    try:
        async with asyncio.timeout(60):
            async for event in follower.events():
                if isinstance(event, SyncReply):
                    snapshots += 1
                elif isinstance(event, RoundResult):
                    seen.append(event.round)
                    if len(seen) == 3:
                        follower.socket.disconnect(market_run.feed)  # the link drops for about 3 rounds
                        await asyncio.sleep(1.0)
                        follower.socket.connect(market_run.feed)
                elif isinstance(event, MarketClosed):
                    break
    finally:
        follower.close()
        client.close()
        context.term()
    assert snapshots >= 2
    assert seen == list(range(seen[0], 13))


async def test_a_market_silent_on_the_feed_is_subscribed_again(market_run: MarketRun, peer: RawPeer) -> None:
    market_run.serve("--min-agents", "1", "--max-tokens", "20", "--round-pause", "0.1", "--heartbeat", "0.2")
    welcome = peer.request(Hello(name="observer"))
    assert isinstance(welcome, Welcome) and welcome.market is not None
    market = welcome.market
    market_run.agent("steady", *static_agent("a=0.5,b=0.5", 1))
    context = zmq.asyncio.Context()
    client = MarketClient(context, market_run.market)
    client.connect()
    follower = FeedFollower(context, market_run.feed, client)
    follower.follow(market)
    seen: list[int] = []
    subscribed_again: list[str] = []

    async def check_in() -> None:  # what the agent runtime does at each heartbeat it gets a pong for
        while True:
            await asyncio.sleep(0.2)
            subscribed_again.extend(follower.subscribe_silent(0.6))

    checking = asyncio.create_task(check_in())
    try:
        async with asyncio.timeout(60):
            async for event in follower.events():
                if isinstance(event, RoundResult):
                    seen.append(event.round)
                    if len(seen) == 3:  # the subscription is lost: nothing of the market reaches it now
                        follower.socket.setsockopt(zmq.UNSUBSCRIBE, subscription(market_topic(market)))
                elif isinstance(event, MarketClosed):
                    break
    finally:
        checking.cancel()
        follower.close()
        client.close()
        context.term()
    assert subscribed_again == [market]
    assert seen == list(range(seen[0], 21))  # the rounds it missed came by the resync


async def test_unknown_type_and_garbage_get_errors_and_the_market_goes_on(market_run: MarketRun, peer: RawPeer) -> None:
    market_run.serve("--min-agents", "1", "--max-tokens", "3")
    peer.send(b"\xc1")
    assert peer.receive().code == "MALFORMED"
    peer.send(b"a", b"b")
    assert peer.receive().code == "MALFORMED"
    market_run.agent("honest", *static_agent("a=1", 1))
    assert market_run.wait(60) == [0, 0]
    assert read_ledger(market_run.db)["text"] == "aaa"

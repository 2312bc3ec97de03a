"""The agent runtime against a real auctioneer served in-process (same event loop, real sockets on loopback)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from agent_client import AgentRuntime, FunctionAgent, StaticAgent
from agent_client.agent import Bid, RoundContext
from auctioneer.ledger import Ledger
from auctioneer.serve import YOUNG_COLLECTION_EVERY, keep_collector_off_the_round_path, serve
from auctioneer.server import wait_until_set
from auctioneer.settings import ServeSettings
from protocol import decode, encode
from protocol.client import FeedEvent, MarketClient, follow_market
from protocol.market_rules import MarketRules
from protocol.messages import (
    CloseMarket,
    MarketClosed,
    MarketInfo,
    MarketStatusReply,
    OpenMarket,
    RoundResult,
    SyncReply,
    SyncRequest,
    Welcome,
)
from protocol.sockets import free_tcp_endpoint

MARKET_TIMEOUT = 120


def market_settings(tmp_path: Path, **values: Any) -> ServeSettings:
    """An exchange opening one market at start (a prompt given, empty unless ``values`` has one)."""
    return ServeSettings.model_validate(
        {
            "prompt": "",
            "db": tmp_path / "market.db",
            "market": free_tcp_endpoint(),
            "feed": free_tcp_endpoint(),
            "heartbeat_interval": 0.2,
            "seed": "cd" * 32,
            **values,
        }
    )


def exchange_settings(tmp_path: Path, **values: Any) -> ServeSettings:
    """An exchange that opens no market at start and stays up until stopped."""
    return ServeSettings.model_validate(
        {
            "db": tmp_path / "exchange.db",
            "market": free_tcp_endpoint(),
            "feed": free_tcp_endpoint(),
            "heartbeat_interval": 0.2,
            "stay": True,
            **values,
        }
    )


def runtime(settings: ServeSettings, name: str, agent: Any) -> AgentRuntime:
    return AgentRuntime(agent, name, settings.market, settings.feed)


def test_serve_keeps_the_garbage_collector_off_the_round_path() -> None:
    threshold = gc.get_threshold()
    try:
        keep_collector_off_the_round_path()
        assert gc.get_freeze_count() > 10_000  # every object alive at start-up, out of collection
        assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_runtimes_trade_and_a_slow_agent_only_misses_rounds(tmp_path: Path) -> None:
    settings = market_settings(tmp_path, min_agents=2, max_tokens=4, round_timeout=1.0, prompt="Go:")

    def slow(context: RoundContext) -> Bid:
        time.sleep(1.5)  # longer than a round: abandoned at every deadline
        return Bid({"s": 1.0}, 5.0)

    async with asyncio.timeout(MARKET_TIMEOUT):
        server = asyncio.create_task(serve(settings))
        quick = runtime(settings, "quick", StaticAgent({"a": 0.7, "b": 0.3}, 1.0))
        sleepy = runtime(settings, "sleepy", FunctionAgent(slow))
        reports = await asyncio.gather(quick.run(), sleepy.run())
        exchange = await server
    assert exchange.finished and [status.closed for status in exchange.recent] == ["max_tokens"]
    with Ledger.open_existing(settings.db) as ledger:
        document = ledger.document()
    assert all(set(r["bids"]) == {"quick"} for r in document["rounds"])
    quick_report, sleepy_report = (report.only() for report in reports)
    assert [r.status for r in quick_report.rounds.values()] == ["accepted"] * 4
    sleepy_statuses = {r.status for r in sleepy_report.rounds.values()}
    assert sleepy_statuses and sleepy_statuses <= {"missed (too slow)", "missed (still thinking)"}
    for whole in reports:
        report = whole.only()
        assert (report.text, report.closed_reason, whole.verification_failures) == (document["text"], "max_tokens", 0)
    assert reports[0].spent == pytest.approx(4.0)


async def test_the_runtime_refuses_a_market_whose_draw_it_cannot_verify(tmp_path: Path) -> None:
    endpoint = free_tcp_endpoint()
    context = zmq.asyncio.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(endpoint)

    async def auctioneer_from_the_future() -> None:
        peer, request = await router.recv_multipart()
        hello = decode(request)
        future = MarketInfo(id="future", rules=MarketRules(mode="beam_search"))
        welcome = Welcome(name="a", heartbeat_interval=1.0, markets=[future], re=hello.id)
        await router.send_multipart([peer, encode(welcome)])

    try:
        answering = asyncio.create_task(auctioneer_from_the_future())
        agent = AgentRuntime(StaticAgent({"x": 1.0}, 1.0), "a", endpoint, free_tcp_endpoint(), context=context)
        report = await asyncio.wait_for(agent.run(), 30)
        await answering
        assert report.markets["future"].closed_reason is not None
        assert "beam_search" in report.markets["future"].closed_reason
        assert report.verification_failures == 1 and report.markets["future"].rounds == {}
    finally:
        router.close(linger=0)
        context.term()


class ThreadNoting(StaticAgent):
    """Notes the threads it is asked on."""

    def __init__(self, blocking: bool) -> None:
        super().__init__({"a": 1.0}, 1.0)
        self.blocking = blocking
        self.threads: set[str] = set()

    def decide(self, context: RoundContext) -> Bid:
        self.threads.add(threading.current_thread().name)
        return super().decide(context)


async def test_an_agent_that_never_blocks_is_asked_on_the_runtimes_thread(tmp_path: Path) -> None:
    settings = market_settings(tmp_path, min_agents=2, max_tokens=3)
    inline, threaded = ThreadNoting(blocking=False), ThreadNoting(blocking=True)
    async with asyncio.timeout(MARKET_TIMEOUT):
        server = asyncio.create_task(serve(settings))
        reports = await asyncio.gather(
            runtime(settings, "inline", inline).run(), runtime(settings, "threaded", threaded).run()
        )
        await server
    here = threading.current_thread().name
    assert inline.threads == {here}
    assert threaded.threads and here not in threaded.threads
    assert all(r.status == "accepted" for report in reports for r in report.only().rounds.values())


async def until(condition: Callable[[], object]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_a_closed_market_lets_go_of_the_bid_its_open_round_held_and_of_its_feed(tmp_path: Path) -> None:
    """An operator closes a market while its round holds the agent's bid: that bid has no result
    coming, so it no longer counts in what the agent has reserved (its next decision, in another
    market, sees nothing reserved), and the market's state and feed subscription are let go."""
    # Two live agents and one that never bids: round 1 waits for it, holding the other's bid.
    settings = exchange_settings(
        tmp_path, markets=[{"id": "held", "prompt": "", "min_agents": 2, "round_timeout": 60.0}]
    )
    reserved: dict[str, list[float]] = {}

    def bid_one(context: RoundContext) -> Bid:
        reserved.setdefault(context.market.id if context.market else "", []).append(context.reserved)
        return Bid({"a": 1.0}, 1.0)

    def status(market: str, number: int) -> str | None:
        report = solo.report.markets.get(market)
        record = report.rounds.get(number) if report else None
        return record.status if record else None

    stop = asyncio.Event()
    context = zmq.asyncio.Context()
    operator = MarketClient(context, settings.market)
    async with asyncio.timeout(MARKET_TIMEOUT):
        server = asyncio.create_task(serve(settings, stop=stop))
        solo = AgentRuntime(FunctionAgent(bid_one), "solo", settings.market, settings.feed, stay=True)
        mute = AgentRuntime(FunctionAgent(lambda context: None), "mute", settings.market, settings.feed, stay=True)
        agents = [asyncio.create_task(agent.run()) for agent in (solo, mute)]
        try:
            await until(lambda: status("held", 1) == "accepted")
            assert solo.followed == {"held"}
            operator.connect()
            assert isinstance(await operator.request(CloseMarket(market="held"), 10), MarketStatusReply)
            await until(lambda: solo.report.markets["held"].closed_reason is not None)
            assert "held" not in solo.markets and solo.followed == frozenset()
            later = OpenMarket(market="later", settings={"prompt": "", "max_tokens": 1}, agents=["solo"])
            assert isinstance(await operator.request(later, 10), MarketStatusReply)
            await until(lambda: solo.report.markets.get("later") and solo.report.markets["later"].closed_reason)
        finally:
            for agent in agents:
                agent.cancel()
            await asyncio.gather(*agents, return_exceptions=True)
            operator.close()
            context.term()
            stop.set()
            await server
    assert reserved == {"held": [0.0], "later": [0.0]}  # not 1.0: the abandoned bid was released
    assert solo.report.markets["later"].closed_reason == "max_tokens" and solo.markets == {}


def huge_distribution(prefix: str, size: int) -> dict[str, float]:
    return {f"{prefix}{i}": 1.0 / size for i in range(size)}


async def test_rounds_larger_than_a_request_still_sync_and_followers_catch_up(tmp_path: Path) -> None:
    """Two bids of 160k disjoint tokens make a 5 MB result: over the 4 MiB request limit, which must
    not apply to the auctioneer's own ledger rows nor to what it sends."""
    support = 160_000
    settings = market_settings(
        tmp_path,
        min_agents=2,
        max_tokens=3,
        round_timeout=30,
        max_support=support,
        max_round_tokens=2 * support,
        max_message_bytes=16 * 2**20,
        heartbeat_interval=1.0,
    )
    seen: list[FeedEvent] = []
    second_result = asyncio.Event()

    def observe(message: Any) -> None:
        if isinstance(message, RoundResult) and message.round == 2:
            second_result.set()

    async with asyncio.timeout(MARKET_TIMEOUT):
        server = asyncio.create_task(serve(settings, observe))
        agents = [
            runtime(settings, name, StaticAgent(huge_distribution(f" {name}", support), 1.0))
            for name in ("left", "right")
        ]
        trading = asyncio.gather(*(a.run() for a in agents))
        await second_result.wait()
        context = zmq.asyncio.Context()
        client = MarketClient(context, settings.market)
        client.connect()
        try:
            reply = await client.request(SyncRequest(since_seq=0), 30)
        finally:
            client.close()
            context.term()
        assert isinstance(reply, SyncReply)
        assert [r.round for r in reply.results] == [1] and reply.more  # a page holds one result at least
        assert len(encode(reply.results[0])) > 4 * 2**20
        await follow_market(None, settings.market, settings.feed, seen.append)
        reports = await trading
        await server
    results = [event.round for event in seen if isinstance(event, RoundResult)]
    assert results == [1, 2, 3] and isinstance(seen[-1], MarketClosed)
    assert all(r.verification_failures == 0 and r.only().closed_reason == "max_tokens" for r in reports)


async def test_a_clock_cancelled_as_its_wake_up_is_set_stops() -> None:
    """The race that kept a stopped server running: the clock's wake-up is set (a bid completed a
    round) and the clock is cancelled (the server stops) in the same turn of the loop."""
    wake = asyncio.Event()
    turns = 0

    async def clock() -> None:
        nonlocal turns
        while True:
            turns += 1
            wake.clear()
            await wait_until_set(wake, 10.0)

    task = asyncio.create_task(clock())
    await asyncio.sleep(0.01)
    wake.set()
    await asyncio.sleep(0)  # the wait for the wake-up completes...
    task.cancel()  # ...as the cancellation arrives
    done, _ = await asyncio.wait({task}, timeout=2.0)
    assert done == {task} and task.cancelled() and turns <= 2


async def test_waiting_for_an_event_ends_at_the_event_or_the_timeout() -> None:
    event = asyncio.Event()
    started = time.monotonic()
    await wait_until_set(event, 0.05)
    assert not event.is_set() and time.monotonic() - started >= 0.05
    asyncio.get_running_loop().call_later(0.01, event.set)
    await wait_until_set(event, 10.0)
    assert event.is_set()


async def test_an_agent_without_stay_leaves_only_when_no_market_that_invites_it_is_open(tmp_path: Path) -> None:
    """Markets opened while the agent trades, just after its welcome, are all traded to their end
    before it leaves by itself (it asks the exchange for its markets before leaving)."""
    settings = exchange_settings(tmp_path, round_pause=0.05)
    stop = asyncio.Event()
    context = zmq.asyncio.Context()
    operator = MarketClient(context, settings.market)
    lengths = {"short": 2, "m2": 5, "m3": 5, "m4": 5}
    async with asyncio.timeout(MARKET_TIMEOUT):
        server = asyncio.create_task(serve(settings, stop=stop))
        agent = AgentRuntime(StaticAgent({"x": 1.0}, 1.0), "a1", settings.market, settings.feed)
        running = asyncio.create_task(agent.run())
        try:
            await until(lambda: agent.registered)
            operator.connect()
            openings = [
                OpenMarket(market=market, settings={"prompt": f"{market}:", "max_tokens": tokens})
                for market, tokens in lengths.items()
            ]
            replies = await asyncio.gather(*(operator.request(opening, 10) for opening in openings))
            assert all(isinstance(reply, MarketStatusReply) for reply in replies)
            report = await running  # it ends by itself
        finally:
            operator.close()
            context.term()
            stop.set()
            await server
    assert {market: r.closed_reason for market, r in report.markets.items()} == dict.fromkeys(lengths, "max_tokens")
    for market, tokens in lengths.items():
        statuses = [r.status for r in report.markets[market].rounds.values()]
        assert statuses.count("accepted") >= 1 and len(report.markets[market].text) == len(market) + 1 + tokens

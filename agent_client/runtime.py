"""The agent runtime: one agent in an exchange, from registration to the close of its last market.

It composes the rooms that do the work:

- :mod:`agent_client.registration`: ``hello``, the resume secret, the heartbeat's check-in;
- :class:`~protocol.client.FeedFollower`: every market the agent is invited to on one feed socket
  (``welcome`` lists them, ``market_opened`` notices add new ones), each resynced on its own gaps;
- :mod:`agent_client.traded_market`: each market's state (the feed's one fold) and the
  verification of every result;
- :mod:`agent_client.trading`: each round's decision and each result's check, and what the agent
  is told; :mod:`agent_client.deciding` asks the user's ``decide`` once per (market, round),
  concurrently across markets, never blocking the network tasks;
- :mod:`agent_client.open_bids` and :mod:`agent_client.report`: the bids not yet settled, and what
  the agent saw.

**When it ends.** Unless ``stay``, the runtime ends once it has joined a market and no market that
invites it is open: when the last market it trades in closes, it asks the exchange for its markets
(``list_markets``) and joins any open one that invites it before deciding to leave, so markets
opened while it traded, or whose notices it missed, are not left behind. A market the exchange
answers ``UNKNOWN_MARKET`` for (it came back on another ledger) is closed as
:data:`UNKNOWN_TO_THE_EXCHANGE`, and the agent trades on in what the exchange holds now. With
``stay`` it runs until stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from agent_client.agent import Agent
from agent_client.registration import GIVE_UP_AFTER, MISSED_PINGS, AgentRejected, AuctioneerLost
from agent_client.report import AgentReport
from agent_client.shard_link import Endpoints, ShardLink, ShardLinks
from agent_client.traded_market import TradedMarket
from agent_client.trading import Trader
from protocol.client import FeedEvent, MarketUnknown, SocketSetup, list_markets
from protocol.draw import UnknownDrawMode, draw_function
from protocol.messages import (
    MarketClosed,
    MarketEnded,
    MarketInfo,
    MarketList,
    MarketOpened,
    Pong,
    RoundOpen,
    RoundResult,
    SyncReply,
    Welcome,
)

__all__ = ["GIVE_UP_AFTER", "AgentRejected", "AgentRuntime", "AuctioneerLost"]

log = logging.getLogger(__name__)

UNKNOWN_TO_THE_EXCHANGE = "unknown to the exchange"  # a market's closing reason, once the exchange forgot it


class AgentRuntime:
    """Runs one agent in an exchange until no market that invites it is open (or forever, with ``stay``)."""

    def __init__(
        self,
        agent: Agent,
        name: str,
        market: str,
        feed: str,
        setup: SocketSetup | None = None,
        request_timeout: float = 5.0,
        history: int = 16,
        give_up_after: float = GIVE_UP_AFTER,
        context: zmq.asyncio.Context | None = None,
        stay: bool = False,
        resume_file: Path | None = None,
    ) -> None:
        self.agent = agent
        self.name = name
        self.market_endpoint = market
        self.feed_endpoint = feed
        self.setup = setup
        self.request_timeout = request_timeout
        self.history = history
        self.give_up_after = give_up_after
        self.stay = stay
        self.resume_file = resume_file
        self._shared_context = context
        self.report = AgentReport(name)
        self.heartbeat_interval = 1.0
        self.markets: dict[str, TradedMarket] = {}  # joined and not closed (a closed market's state is let go)
        self._tasks: set[asyncio.Task[None]] = set()
        self._zmq = context or zmq.asyncio.Context()
        self.links = ShardLinks(self._zmq, setup, name, request_timeout, give_up_after, resume_file, (market, feed))
        self.trader = Trader(agent, name, self.report, self.links, self._spawn)
        self._stopping = False

    async def run(self) -> AgentReport:
        """Register, follow the markets, bid in their rounds; return this agent's report."""
        self._done = asyncio.get_running_loop().create_future()
        try:
            link, _ = self.links.link(self.links.entry)
            await self._open(link)
            await self._done
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            # Stop the background tasks and let them finish *before* closing their sockets: closing
            # first fails a pending request, and asyncio.wait_for (3.11) can then raise that error
            # instead of the cancellation, leaving a heartbeat running on closed sockets.
            self._stopping = True
            background = [*self._tasks, *(task for link in self.links.links.values() for task in link.tasks)]
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            self.links.close()
            if self._shared_context is None:
                self._zmq.term()
        return self.report

    async def _open(self, link: ShardLink) -> None:
        """Register at a link's shard and start following it (the entry link's failure ends the run)."""
        welcome = await link.open(self.links.context, self.setup, self.request_timeout)
        assert link.follower is not None
        for market_id, since in self.links.waiting.pop(link.endpoints, {}).items():
            if market_id in self.markets and self.markets[market_id].link == link.endpoints:
                link.follower.follow(market_id, since)
        self._welcomed(link, welcome)
        link.tasks += [
            asyncio.create_task(self._watch(self._follow(link))),
            asyncio.create_task(self._watch(self._heartbeat(link))),
        ]

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task of this run (awaited, or cancelled, when the run ends)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, work: Coroutine[Any, Any, None]) -> None:
        """Run one link's work; the run ends when a link gives the reason to (its end, or a refusal)."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if not self._done.done():
                self._done.set_exception(exc)
            return
        if self._finished() and not self._done.done():
            self._done.set_result(None)

    async def _follow(self, link: ShardLink) -> None:
        assert link.follower is not None
        if self._finished() and not await self._open_markets_left():
            return
        async for event in link.follower.events():
            self._apply(event, link)
            if self._finished() and not await self._open_markets_left():
                return

    @property
    def registered(self) -> bool:
        """Whether the exchange has welcomed this agent (and its feed is being followed)."""
        return any(True for _ in self.links.live())

    @property
    def followed(self) -> frozenset[str]:
        """The markets whose broadcasts this runtime follows now (none before it registers)."""
        return frozenset().union(*(link.follower.followed for link in self.links.live() if link.follower))

    def _finished(self) -> bool:
        """Every joined market closed, and no resync left to replay what the feed lost before the end."""
        return not self.stay and bool(self.report.markets) and not self.markets and not self.links.catching_up

    async def _open_markets_left(self) -> bool:
        """Before leaving: join every open market that invites this agent (the exchange's own list, so
        a notice the feed lost cannot make it leave early); whether it joined any."""
        for link in self.links.live():
            try:
                listing = await list_markets(link.client, self.request_timeout)
            except (TimeoutError, ConnectionError) as exc:
                log.info("the exchange did not list its markets (%s)", exc or type(exc).__name__)
                continue
            self._apply(listing, link)
            return bool(self.markets)
        return False

    # --- registration and liveness ------------------------------------------------------------

    def _welcomed(self, link: ShardLink, welcome: Welcome) -> None:
        self.trader.budget = welcome.budget
        self.report.spent = welcome.spent
        self.heartbeat_interval = welcome.heartbeat_interval
        self.links.known.update((shard.market_endpoint, shard.feed_endpoint) for shard in welcome.shards or ())
        for info in welcome.markets:
            self._join(info, link)
        listed = {info.id for info in welcome.markets}
        assert link.follower is not None
        link.follower.notices_from(welcome.exchange_seq)
        for market_id, market in self.markets.items():
            if market.link == link.endpoints and market_id not in listed:
                # Not open any more (it ended while this agent was away, or this exchange never held
                # it): its resync replays the end, or says it is unknown.
                link.follower.resync(market_id)
        log.info("registered as %s with %d open market(s) to join", self.name, len(welcome.markets))

    def _join(self, info: MarketInfo, via: ShardLink) -> None:
        """Take part in a market, on the shard that serves it: follow its feed (a sync brings its
        state first). A market already followed elsewhere has moved: it is followed at its new shard
        from where it was. A market that closed is not joined again."""
        where = (info.market_endpoint, info.feed_endpoint) if info.market_endpoint and info.feed_endpoint else None
        endpoints = where or via.endpoints
        traded = self.markets.get(info.id)
        if traded is not None:
            if traded.link != endpoints:
                self._move(traded, info, endpoints)
            return
        known = self.report.markets.get(info.id)
        if known is not None and known.closed_reason is not None:
            return
        if info.agents is not None and self.name not in info.agents and info.reference_agent != self.name:
            return
        report = self.report.market(info.id)
        try:
            draw_function(info.rules.mode)
        except UnknownDrawMode as exc:
            report.closed_reason = f"refused: cannot verify its draw ({exc})"
            self.report.verification_failures += 1
            log.error("not trading in market %s: %s", info.id, exc)
            return
        market = TradedMarket(info.id, info=info, report=report, recent=deque(maxlen=self.history), link=endpoints)
        self.markets[info.id] = market
        self._follow_at(market, 0)

    def _follow_at(self, market: TradedMarket, since_seq: int) -> None:
        """Follow ``market`` on its shard's link (opening the link first if it is new)."""
        link, new = self.links.link(market.link)
        if link.follower is not None:
            link.follower.follow(market.id, since_seq)
            return
        if new:
            self._spawn(self._watch(self._open(link)))
        self.links.waiting.setdefault(market.link, {})[market.id] = since_seq

    def _move(self, market: TradedMarket, info: MarketInfo, endpoints: Endpoints) -> None:
        old = self.links.links.get(market.link)
        since = old.follower.position(market.id) if old is not None and old.follower is not None else 0
        if old is not None and old.follower is not None:
            old.follower.unfollow(market.id)
        log.info("market %s moved to shard %s: following it there", market.id, info.shard)
        market.info, market.link = info, endpoints
        self._follow_at(market, since)

    async def _heartbeat(self, link: ShardLink) -> None:
        """Ping every interval; reconnect and re-register when the shard goes silent or forgets us. A
        shard silent for longer than ``give_up_after``: its markets are looked for at the others."""
        while not self._stopping:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                reply = await link.registration.check_in(self.heartbeat_interval, self._reconnect(link))
            except AuctioneerLost:
                link.lost = True
                if not self._relocate(link) and not any(True for _ in self.links.live()):
                    raise
                log.warning("shard at %s lost: its markets are looked for at the others", link.endpoints[0])
                return
            except AgentRejected:
                raise
            except Exception:
                log.exception("heartbeat failed; trying again")
                continue
            if isinstance(reply, Welcome):
                self._welcomed(link, reply)
            elif isinstance(reply, Pong):
                self.report.spent = reply.spent
                self.trader.budget = reply.budget  # an operator may have changed it
                if link.follower is not None:
                    for market in link.follower.subscribe_silent(MISSED_PINGS * self.heartbeat_interval):
                        log.info(
                            "market %s silent on the feed for %d heartbeats: subscribed again", market, MISSED_PINGS
                        )

    def _reconnect(self, link: ShardLink) -> Callable[[], None]:
        def reconnected() -> None:
            if link.follower is not None:
                link.follower.reconnect()  # what was broadcast meanwhile comes back through a resync
            self._relocate(link)

        return reconnected

    def _relocate(self, silent: ShardLink) -> bool:
        """A shard went silent: link to the other shards this agent knows of, whose welcomes say where
        its markets are now; whether there is any to link to."""
        others = [endpoints for endpoints in self.links.known if endpoints != silent.endpoints]
        for endpoints in others:
            link, new = self.links.link(endpoints)
            if new:
                self._spawn(self._watch(self._open(link)))
        return bool(others)

    # --- the feed -------------------------------------------------------------------------------

    def _apply(self, event: FeedEvent, link: ShardLink) -> None:
        if isinstance(event, MarketOpened):
            self._join(event.market, link)
            return
        if isinstance(event, MarketList):
            for status in event.markets:
                if status.closed is None:
                    self._join(status.market, link)
                elif status.market.id in self.markets:
                    self._closed(self.markets[status.market.id], status.closed, status.text)
            return
        if isinstance(event, MarketEnded):
            if event.market in self.markets:
                self._closed(self.markets[event.market], event.reason, None)
            return
        if isinstance(event, MarketUnknown):
            if event.market in self.markets:
                log.warning("market %s is unknown to the exchange (it came back on another ledger?): %s",
                            event.market, event.message)  # fmt: skip
                self._closed(self.markets[event.market], UNKNOWN_TO_THE_EXCHANGE, None)
            return
        market = self.markets.get(event.market or "")
        if market is None or market.link != link.endpoints:
            return  # (a market that moved: its new shard's feed tells it now)
        if isinstance(event, SyncReply):
            self.report.resyncs += 1
            market.apply(event)
            market.report.text = event.text
        elif isinstance(event, RoundOpen):
            self.trader.round_opened(market, event)
        elif isinstance(event, RoundResult):
            self.trader.result(market, event)
        elif isinstance(event, MarketClosed):
            self._closed(market, event.reason, event.text)

    def _closed(self, market: TradedMarket, reason: str, text: str | None) -> None:
        """The market ended: record why, and let go of everything kept to trade in it (its state, its
        bids still open, its feed subscription). Only its report stays."""
        if market.report.closed_reason is None:
            market.report.closed_reason = reason
        if text is not None:
            market.report.text = text
        if self.markets.get(market.id) is market:
            del self.markets[market.id]
            self.trader.market_closed(market.id)
            link = self.links.links.get(market.link)
            if link is not None and link.follower is not None:
                link.follower.unfollow(market.id)

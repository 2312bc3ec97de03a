"""The agent runtime: one agent in an exchange, from registration to the close of its last market.

It composes the rooms that do the work:

- :mod:`agent_client.registration`: ``hello``, the resume secret, the heartbeat's check-in;
- :class:`~protocol.client.FeedFollower`: every market the agent is invited to on one feed socket
  (``welcome`` lists them, ``market_opened`` notices add new ones), each resynced on its own gaps;
- :mod:`agent_client.traded_market`: each market's state (the feed's one fold) and the
  verification of every result;
- :mod:`agent_client.deciding`: the user's ``decide``, once per (market, round), concurrently
  across markets, never blocking the network tasks;
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
import time
from collections import deque
from pathlib import Path

import zmq
import zmq.asyncio

from agent_client.agent import Agent, RoundContext
from agent_client.deciding import ask_agent
from agent_client.open_bids import OpenBids
from agent_client.registration import GIVE_UP_AFTER, AgentRejected, AuctioneerLost, Registration
from agent_client.report import AgentReport
from agent_client.traded_market import TradedMarket
from agent_client.verify import OwnBid
from protocol.client import FeedEvent, FeedFollower, MarketClient, MarketUnknown, SocketSetup, list_markets
from protocol.draw import UnknownDrawMode, draw_function
from protocol.messages import (
    BidAccepted,
    Error,
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
    seal_bid,
)

__all__ = ["GIVE_UP_AFTER", "AgentRejected", "AgentRuntime", "AuctioneerLost"]

log = logging.getLogger(__name__)

DEADLINE_MARGIN = 0.1  # fraction of the round's timeout kept free for the bid to travel
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
        self.budget: float | None = None
        self.heartbeat_interval = 1.0
        self.markets: dict[str, TradedMarket] = {}  # joined and not closed (a closed market's state is let go)
        self._open_bids = OpenBids()
        self._decisions = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._follower: FeedFollower | None = None
        self._stopping = False

    async def run(self) -> AgentReport:
        """Register, follow the markets, bid in their rounds; return this agent's report."""
        context = self._shared_context or zmq.asyncio.Context()
        self.client = MarketClient(context, self.market_endpoint, self.setup)
        self.client.connect()
        self.registration = Registration(
            self.client, self.name, self.request_timeout, self.give_up_after, self.resume_file
        )
        heartbeat: asyncio.Task[None] | None = None
        try:
            welcome = await self.registration.register()
            self._follower = FeedFollower(
                context, self.feed_endpoint, self.client, self.setup, self.request_timeout, welcome.exchange_seq
            )
            self._welcomed(welcome)
            heartbeat = asyncio.create_task(self._heartbeat())
            following = asyncio.create_task(self._follow(self._follower))
            await asyncio.wait({following, heartbeat}, return_when=asyncio.FIRST_COMPLETED)
            if heartbeat.done():  # the heartbeat only ends by giving up (or being refused)
                following.cancel()
                heartbeat.result()
            await following
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            # Stop the background tasks and let them finish *before* closing their sockets: closing
            # first fails a pending request, and asyncio.wait_for (3.11) can then raise that error
            # instead of the cancellation, leaving a heartbeat running on closed sockets.
            self._stopping = True
            background = [*self._tasks, *([heartbeat] if heartbeat else [])]
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self._follower is not None:
                self._follower.close()
            self.client.close()
            if self._shared_context is None:
                context.term()
        return self.report

    async def _follow(self, follower: FeedFollower) -> None:
        if self._finished(follower) and not await self._open_markets_left():
            return
        async for event in follower.events():
            self._apply(event)
            if self._finished(follower) and not await self._open_markets_left():
                return

    @property
    def registered(self) -> bool:
        """Whether the exchange has welcomed this agent (and its feed is being followed)."""
        return self._follower is not None

    @property
    def followed(self) -> frozenset[str]:
        """The markets whose broadcasts this runtime follows now (none before it registers)."""
        return self._follower.followed if self._follower is not None else frozenset()

    def _finished(self, follower: FeedFollower) -> bool:
        """Every joined market closed, and no resync left to replay what the feed lost before the end."""
        return not self.stay and bool(self.report.markets) and not self.markets and not follower.catching_up

    async def _open_markets_left(self) -> bool:
        """Before leaving: join every open market that invites this agent (the exchange's own list, so
        a notice the feed lost cannot make it leave early); whether it joined any."""
        try:
            listing = await list_markets(self.client, self.request_timeout)
        except (TimeoutError, ConnectionError) as exc:
            log.info("the exchange did not list its markets (%s): leaving", exc or type(exc).__name__)
            return False
        self._apply(listing)
        return bool(self.markets)

    # --- registration and liveness ------------------------------------------------------------

    def _welcomed(self, welcome: Welcome) -> None:
        self.budget = welcome.budget
        self.report.spent = welcome.spent
        self.heartbeat_interval = welcome.heartbeat_interval
        for info in welcome.markets:
            self._join(info)
        listed = {info.id for info in welcome.markets}
        assert self._follower is not None
        for market_id in self.markets:
            if market_id not in listed:
                # Not open any more (it ended while this agent was away, or this exchange never held
                # it): its resync replays the end, or says it is unknown.
                self._follower.resync(market_id)
        log.info("registered as %s with %d open market(s) to join", self.name, len(welcome.markets))

    def _join(self, info: MarketInfo) -> None:
        """Take part in a market: follow its feed (a sync brings its state first). A market that
        closed is not joined again."""
        known = self.report.markets.get(info.id)
        if info.id in self.markets or (known is not None and known.closed_reason is not None):
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
        self.markets[info.id] = TradedMarket(info.id, info=info, report=report, recent=deque(maxlen=self.history))
        assert self._follower is not None
        self._follower.follow(info.id)

    async def _heartbeat(self) -> None:
        """Ping every interval; reconnect and re-register when the auctioneer goes silent or forgets us."""
        while not self._stopping:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                reply = await self.registration.check_in(self.heartbeat_interval, self._reconnect_feed)
            except (AgentRejected, AuctioneerLost):
                raise
            except Exception:
                log.exception("heartbeat failed; trying again")
                continue
            if isinstance(reply, Welcome):
                self._welcomed(reply)
            elif isinstance(reply, Pong):
                self.report.spent = reply.spent
                self.budget = reply.budget  # an operator may have changed it

    def _reconnect_feed(self) -> None:
        if self._follower is not None:
            self._follower.reconnect()  # what was broadcast meanwhile comes back through a resync

    # --- the feed -------------------------------------------------------------------------------

    def _apply(self, event: FeedEvent) -> None:
        if isinstance(event, MarketOpened):
            self._join(event.market)
            return
        if isinstance(event, MarketList):
            for status in event.markets:
                if status.closed is None:
                    self._join(status.market)
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
        if market is None:
            return
        if isinstance(event, SyncReply):
            self.report.resyncs += 1
            market.apply(event)
            market.report.text = event.text
        elif isinstance(event, RoundOpen):
            self._round_opened(market, event)
        elif isinstance(event, RoundResult):
            self._apply_result(market, event)
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
            self._open_bids.drop_market(market.id)
            assert self._follower is not None
            self._follower.unfollow(market.id)

    def _round_opened(self, market: TradedMarket, announcement: RoundOpen) -> None:
        market.apply(announcement)
        decide, reopened = market.round_opened(announcement)
        if reopened:
            self._open_bids.take(market.id, announcement.round)
        if decide:
            task = asyncio.create_task(self._decide_and_bid(market, announcement))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _apply_result(self, market: TradedMarket, result: RoundResult) -> None:
        problems, own = market.checked(result, self._open_bids.take(market.id, result.round), self.name)
        for problem in problems:
            log.error("market %s round %d FAILED VERIFICATION: %s", market.id, result.round, problem)
        self.report.verification_failures += bool(problems)
        if own is not None:  # a payment for a bid of this run (the welcome and pongs count the others)
            self.report.spent += result.payments.get(self.name, 0.0)
        try:
            self.agent.observe(result, self._context(market, result.round, 0.0))
        except Exception:
            log.exception("agent.observe failed in market %s round %d", market.id, result.round)

    # --- deciding and bidding -----------------------------------------------------------------

    def _context(self, market: TradedMarket, number: int, timeout: float) -> RoundContext:
        prompt = market.info.rules.prompt
        return RoundContext(
            name=self.name,
            round=number,
            prompt=prompt,
            text=prompt + "".join(market.tokens),
            tokens=tuple(market.tokens),
            budget=self.budget,
            spent=self.report.spent,
            timeout=timeout,
            recent=tuple(market.recent),
            market=market.info,
            reserved=self._open_bids.total,
            decisions=self._decisions,
        )

    async def _decide_and_bid(self, market: TradedMarket, announcement: RoundOpen) -> None:
        remaining = min(announcement.timeout, announcement.deadline - time.time()) * (1 - DEADLINE_MARGIN)
        record = market.report.record(announcement.round)
        if remaining <= 0:
            record.status = "missed (joined late)"
            return
        started = time.monotonic()
        self._decisions += 1
        context = self._context(market, announcement.round, remaining)
        bid = await ask_agent(self.agent, market, context, remaining, record)
        if bid is None:
            return
        info = market.info
        try:
            message = seal_bid(announcement.round, bid.distribution, float(bid.amount), info.rules.max_support, info.id)
        except ValueError as exc:
            record.status = "invalid (not sent)"
            log.error("market %s round %d: the agent's bid is invalid: %s", info.id, announcement.round, exc)
            return
        record.bid = float(bid.amount)
        # Known before the reply: the result may be broadcast before the acknowledgement is read.
        self._open_bids.add(info.id, announcement.round, OwnBid(self.name, dict(bid.distribution), float(bid.amount)))
        left = max(remaining - (time.monotonic() - started), 0.05) + DEADLINE_MARGIN * announcement.timeout
        try:
            reply = await self.client.request(message, left)
        except (TimeoutError, ConnectionResetError):
            record.status = "no answer"
            return
        if isinstance(reply, BidAccepted):
            record.status = "accepted"
            market.bid_acknowledged(announcement)
        elif isinstance(reply, Error):
            record.status = reply.code
            self._open_bids.take(info.id, announcement.round)
            log.warning("market %s round %d: bid refused: %s %s", info.id, announcement.round, reply.code,
                        reply.message)  # fmt: skip

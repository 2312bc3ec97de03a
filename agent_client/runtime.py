"""The agent runtime: registration, heartbeats, reconnects, resync, and calling the user's agent.

User code never blocks the network tasks: sync ``decide`` methods run in a worker thread, async
ones as tasks, and both are abandoned at the round deadline (a slow agent just misses the round).
Every result is verified against the seed commitment announced at round open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field

import zmq
import zmq.asyncio

from agent_client.agent import Agent, Bid, RoundContext, is_async
from agent_client.verify import OwnBid, result_problems
from protocol.client import FeedEvent, FeedFollower, MarketClient, SocketSetup
from protocol.distribution import DEFAULT_MAX_SUPPORT
from protocol.draw import UnknownDrawMode, draw_function
from protocol.market_rules import MechanismSettings
from protocol.messages import (
    BidAccepted,
    Error,
    Hello,
    MarketClosed,
    Ping,
    Pong,
    RoundOpen,
    RoundResult,
    SyncReply,
    Welcome,
    seal_bid,
)

log = logging.getLogger(__name__)

MISSED_PINGS = 3
GIVE_UP_AFTER = 60.0  # seconds without any answer from the auctioneer before the runtime stops
DEADLINE_MARGIN = 0.1  # fraction of the round's timeout kept free for the bid to travel


class AgentRejected(Exception):
    """The auctioneer refused this agent for good (for example an unauthorised name)."""


class AuctioneerLost(Exception):
    """No answer from the auctioneer for longer than the runtime's ``give_up_after``."""


@dataclass
class RoundRecord:
    """One round as this agent saw it."""

    round: int
    bid: float | None = None
    status: str = "no bid"
    token: str | None = None
    payment: float = 0.0


@dataclass
class AgentReport:
    """Everything one agent saw of a market (``as_dict`` for JSON)."""

    name: str
    rounds: dict[int, RoundRecord] = field(default_factory=dict)
    text: str = ""
    closed_reason: str | None = None
    spent: float = 0.0
    verification_failures: int = 0
    resyncs: int = 0

    def record(self, number: int) -> RoundRecord:
        return self.rounds.setdefault(number, RoundRecord(number))

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "rounds": [asdict(self.rounds[n]) for n in sorted(self.rounds)]}


class AgentRuntime:
    """Runs one agent in one market until the market closes."""

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
    ) -> None:
        self.agent = agent
        self.name = name
        self.market_endpoint = market
        self.feed_endpoint = feed
        self.setup = setup
        self.request_timeout = request_timeout
        self.give_up_after = give_up_after
        self._shared_context = context
        self._last_contact = time.monotonic()
        self.report = AgentReport(name)
        self.prompt = ""
        self.tokens: list[str] = []
        self.applied_round = 0
        self.budget: float | None = None
        self.heartbeat_interval = 1.0
        self.mechanism: MechanismSettings | None = None
        self.max_support = DEFAULT_MAX_SUPPORT
        self.reference_weight = 0.0
        self._sent: dict[int, OwnBid] = {}
        self._acknowledged: set[int] = set()
        self.recent: deque[RoundResult] = deque(maxlen=history)
        self._commitments: dict[int, str] = {}
        self._decided_round = 0
        self._thinking: asyncio.Future[Bid | None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._follower: FeedFollower | None = None
        self._stopping = False

    async def run(self) -> AgentReport:
        """Register, follow the market, bid every round; return this agent's report at market close."""
        context = self._shared_context or zmq.asyncio.Context()
        self.client = MarketClient(context, self.market_endpoint, self.setup)
        self.client.connect()
        follower: FeedFollower | None = None
        heartbeat: asyncio.Task[None] | None = None
        try:
            await self._register()
            follower = FeedFollower(context, self.feed_endpoint, self.client, self.setup, self.request_timeout)
            self._follower = follower
            heartbeat = asyncio.create_task(self._heartbeat())
            following = asyncio.create_task(self._follow(follower))
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
            if follower is not None:
                follower.close()
            self.client.close()
            if self._shared_context is None:
                context.term()
        return self.report

    async def _follow(self, follower: FeedFollower) -> None:
        async for event in follower.events():
            self._apply(event)

    # --- registration and liveness ------------------------------------------------------------

    async def _register(self) -> None:
        delay = 0.1
        while True:
            try:
                timeout = min(self.request_timeout, max(self.give_up_after, 0.1))
                reply = await self.client.request(Hello(name=self.name, client="token-auction"), timeout)
            except (TimeoutError, ConnectionResetError):
                self._check_not_lost()
                log.info("auctioneer not answering hello; retrying in %.1fs", delay)
                self.client.connect()
            else:
                self._last_contact = time.monotonic()
                if isinstance(reply, Welcome):
                    self._welcomed(reply)
                    return
                if isinstance(reply, Error) and reply.code != "NAME_TAKEN":
                    raise AgentRejected(f"{reply.code}: {reply.message}")
                log.info("registration refused (%s); retrying in %.1fs", getattr(reply, "code", reply.type), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _welcomed(self, welcome: Welcome) -> None:
        try:
            draw_function(welcome.mechanism.mode)
        except UnknownDrawMode as exc:
            raise AgentRejected(f"cannot verify this market's draw: {exc}") from None
        self.prompt = welcome.prompt
        self.budget = welcome.budget
        self.report.spent = welcome.spent
        self.heartbeat_interval = welcome.heartbeat_interval
        self.mechanism = welcome.mechanism
        self.max_support = welcome.max_support
        self.reference_weight = welcome.reference_weight
        log.info("registered as %s in market %s", self.name, welcome.market)

    async def _heartbeat(self) -> None:
        """Ping every interval; reconnect and re-register when the auctioneer goes silent or forgets us."""
        while not self._stopping:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._check_in()
            except (AgentRejected, AuctioneerLost):
                raise
            except Exception:
                log.exception("heartbeat failed; trying again")

    async def _check_in(self) -> None:
        try:
            reply = await self.client.request(Ping(), MISSED_PINGS * self.heartbeat_interval)
        except (TimeoutError, ConnectionResetError):
            log.warning("auctioneer silent for %d heartbeats; reconnecting", MISSED_PINGS)
            self.client.connect()
            if self._follower is not None:
                self._follower.reconnect()  # what was broadcast meanwhile comes back through a resync
            await self._register()
            return
        self._last_contact = time.monotonic()
        if isinstance(reply, Error) and reply.code == "NOT_REGISTERED":
            await self._register()
        elif not isinstance(reply, Pong):
            log.debug("unexpected reply to ping: %s", reply.type)

    def _check_not_lost(self) -> None:
        silent = time.monotonic() - self._last_contact
        if silent > self.give_up_after:
            raise AuctioneerLost(f"no answer from the auctioneer for {silent:.0f}s")

    # --- the feed -------------------------------------------------------------------------------

    def _apply(self, event: FeedEvent) -> None:
        if isinstance(event, SyncReply):
            self.report.resyncs += 1
            self.tokens = list(event.tokens)
            self.applied_round = max(self.applied_round, event.last_round)
            self.report.text = event.text
            self.report.spent = event.balances.get(self.name, self.report.spent)
        elif isinstance(event, RoundOpen):
            previous = self._commitments.get(event.round)
            self._commitments[event.round] = event.seed_commitment
            reopened = previous is not None and previous != event.seed_commitment
            if reopened:
                # The auctioneer restarted and opened this round afresh: a bid it acknowledged before
                # is gone with the old round, so decide and bid again.
                log.warning("round %d was reopened (the auctioneer restarted): bidding again", event.round)
                self._sent.pop(event.round, None)
                self._acknowledged.discard(event.round)
            if event.round > self._decided_round or reopened:
                self._decided_round = event.round
                task = asyncio.create_task(self._decide_and_bid(event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif isinstance(event, RoundResult):
            self._apply_result(event)
        elif isinstance(event, MarketClosed):
            self.report.closed_reason = event.reason
            self.report.text = event.text

    def _apply_result(self, result: RoundResult) -> None:
        assert self.mechanism is not None
        own = self._sent.pop(result.round, None)
        acknowledged = result.round in self._acknowledged
        self._acknowledged.discard(result.round)
        if self.name not in result.bids and not acknowledged:
            own = None  # sent but never acknowledged: it may not have arrived, nothing to check
        problems = result_problems(
            result, self._commitments.pop(result.round, None), self.mechanism, own, self.reference_weight
        )
        for problem in problems:
            log.error("round %d FAILED VERIFICATION: %s", result.round, problem)
        self.report.verification_failures += bool(problems)
        if result.round > self.applied_round:
            self.applied_round = result.round
            if result.token is not None:
                self.tokens.append(result.token)
        record = self.report.record(result.round)
        record.token = result.token
        record.payment = result.payments.get(self.name, 0.0)
        self.report.text = result.text
        self.report.spent = result.balances.get(self.name, self.report.spent)
        self.recent.append(result)
        try:
            self.agent.observe(result, self._context(result.round, 0.0))
        except Exception:
            log.exception("agent.observe failed in round %d", result.round)

    # --- deciding and bidding -----------------------------------------------------------------

    def _context(self, number: int, timeout: float) -> RoundContext:
        return RoundContext(
            name=self.name,
            round=number,
            prompt=self.prompt,
            text=self.prompt + "".join(self.tokens),
            tokens=tuple(self.tokens),
            budget=self.budget,
            spent=self.report.spent,
            timeout=timeout,
            recent=tuple(self.recent),
            mechanism=self.mechanism,
        )

    async def _decide_and_bid(self, announcement: RoundOpen) -> None:
        remaining = min(announcement.timeout, announcement.deadline - time.time()) * (1 - DEADLINE_MARGIN)
        record = self.report.record(announcement.round)
        if remaining <= 0:
            record.status = "missed (joined late)"
            return
        started = time.monotonic()
        bid = await self._ask_agent(self._context(announcement.round, remaining), remaining, record)
        if bid is None:
            return
        try:
            message = seal_bid(announcement.round, bid.distribution, float(bid.amount), self.max_support)
        except ValueError as exc:
            record.status = "invalid (not sent)"
            log.error("round %d: the agent's bid is invalid: %s", announcement.round, exc)
            return
        record.bid = float(bid.amount)
        # Known before the reply: the result may be broadcast before the acknowledgement is read.
        self._sent[announcement.round] = OwnBid(self.name, dict(bid.distribution), float(bid.amount))
        left = max(remaining - (time.monotonic() - started), 0.05) + DEADLINE_MARGIN * announcement.timeout
        try:
            reply = await self.client.request(message, left)
        except (TimeoutError, ConnectionResetError):
            record.status = "no answer"
            return
        if isinstance(reply, BidAccepted):
            record.status = "accepted"
            if announcement.round > self.applied_round:
                self._acknowledged.add(announcement.round)
        elif isinstance(reply, Error):
            record.status = reply.code
            self._sent.pop(announcement.round, None)
            log.warning("round %d: bid refused: %s %s", announcement.round, reply.code, reply.message)

    async def _ask_agent(self, context: RoundContext, remaining: float, record: RoundRecord) -> Bid | None:
        try:
            if is_async(self.agent):
                outcome = self.agent.decide(context)
                assert asyncio.iscoroutine(outcome) or isinstance(outcome, asyncio.Future)
                return await asyncio.wait_for(outcome, remaining)
            if self._thinking is not None and not self._thinking.done():
                record.status = "missed (still thinking)"
                return None
            self._thinking = asyncio.get_running_loop().run_in_executor(None, self.agent.decide, context)  # type: ignore[arg-type]
            return await asyncio.wait_for(asyncio.shield(self._thinking), remaining)
        except TimeoutError:
            record.status = "missed (too slow)"
        except Exception:
            record.status = "agent error"
            log.exception("round %d: agent.decide raised", context.round)
        return None

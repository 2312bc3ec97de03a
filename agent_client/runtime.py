"""The agent runtime: registration with the exchange, heartbeats, reconnects, every market the agent
is invited to, and calling the user's agent.

An agent registers once. It follows every open market that invites it (``welcome`` lists them,
``market_opened`` notices add new ones) on one feed socket, each market resynced on its own gaps,
and decides once per (market, round), concurrently across markets. User code never blocks the
network tasks: sync ``decide`` methods run in worker threads (one at a time per market), async ones
as tasks, and both are abandoned at the round deadline (a slow agent just misses the round); an
agent that declares it never blocks (``Agent.blocking = False``, the built-in ones) is asked on the
runtime's own thread. Every result is verified (SPEC section 4): the commitment, the draw, and the
agent's own bid, charge and sponsor share. A round reopened after an auctioneer restart (same
number, announced again under a new seq) is bid again: the bid acknowledged before the restart went
with the old round.

Without CurveZMQ the exchange binds a name to a resume secret handed out in the first ``welcome``;
the runtime sends it with every later ``hello``, and keeps it in ``resume_file`` (if given) so that a
restarted agent process can return under its name.

The runtime ends when every market it joined has closed (and it joined one), unless ``stay``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import zmq
import zmq.asyncio

from agent_client.agent import Agent, Bid, RoundContext, is_async
from agent_client.open_bids import OpenBids
from agent_client.verify import OwnBid, result_problems
from protocol.client import FeedEvent, FeedFollower, MarketClient, SocketSetup
from protocol.draw import UnknownDrawMode, draw_function
from protocol.errors import ProtocolError
from protocol.messages import (
    BidAccepted,
    Error,
    Hello,
    MarketClosed,
    MarketEnded,
    MarketInfo,
    MarketList,
    MarketOpened,
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
class MarketReport:
    """One market as this agent saw it."""

    market: str
    rounds: dict[int, RoundRecord] = field(default_factory=dict)
    text: str = ""
    closed_reason: str | None = None

    def record(self, number: int) -> RoundRecord:
        return self.rounds.setdefault(number, RoundRecord(number))


@dataclass
class AgentReport:
    """Everything one agent saw of the exchange (``as_dict`` for JSON)."""

    name: str
    markets: dict[str, MarketReport] = field(default_factory=dict)
    spent: float = 0.0
    verification_failures: int = 0
    resyncs: int = 0

    def market(self, market: str) -> MarketReport:
        return self.markets.setdefault(market, MarketReport(market))

    def only(self) -> MarketReport:
        """The report of the one market this agent took part in."""
        if len(self.markets) != 1:
            raise ValueError(f"{self.name} took part in {len(self.markets)} markets")
        return next(iter(self.markets.values()))

    @property
    def all_closed(self) -> bool:
        return bool(self.markets) and all(m.closed_reason is not None for m in self.markets.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "spent": self.spent,
            "verification_failures": self.verification_failures,
            "resyncs": self.resyncs,
            "markets": [
                {**asdict(report), "rounds": [asdict(report.rounds[n]) for n in sorted(report.rounds)]}
                for report in self.markets.values()
            ],
        }


@dataclass
class MarketState:
    """What the runtime tracks of one market it takes part in."""

    info: MarketInfo
    report: MarketReport
    recent: deque[RoundResult]
    tokens: list[str] = field(default_factory=list)
    applied_round: int = 0
    decided_round: int = 0
    commitments: dict[int, str] = field(default_factory=dict)
    announced: dict[int, int] = field(default_factory=dict)  # round -> seq of its latest round_open
    acknowledged: dict[int, int] = field(default_factory=dict)  # round -> seq of the round_open it answered
    thinking: asyncio.Future[Bid | None] | None = None


class AgentRuntime:
    """Runs one agent in an exchange until its markets close (or forever, with ``stay``)."""

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
        self._resume = read_resume_secret(resume_file)
        self._shared_context = context
        self._last_contact = time.monotonic()
        self.report = AgentReport(name)
        self.budget: float | None = None
        self.heartbeat_interval = 1.0
        self.markets: dict[str, MarketState] = {}  # joined and not closed (a closed market's state is let go)
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
        heartbeat: asyncio.Task[None] | None = None
        try:
            welcome = await self._register()
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
        if self._finished(follower):
            return
        try:
            async for event in follower.events():
                self._apply(event)
                if self._finished(follower):
                    return
        except ProtocolError as exc:  # a market this agent joined is unknown: another ledger behind the address
            raise AgentRejected(f"{exc.message} (did the exchange restart on another ledger?)") from None

    @property
    def followed(self) -> frozenset[str]:
        """The markets whose broadcasts this runtime follows now (none before it registers)."""
        return self._follower.followed if self._follower is not None else frozenset()

    def _finished(self, follower: FeedFollower) -> bool:
        """Every market closed, and no resync left to replay what the feed lost before the end."""
        return not self.stay and bool(self.report.markets) and not self.markets and not follower.catching_up

    # --- registration and liveness ------------------------------------------------------------

    async def _register(self) -> Welcome:
        delay = 0.1
        while True:
            try:
                timeout = min(self.request_timeout, max(self.give_up_after, 0.1))
                hello = Hello(name=self.name, client="token-auction", resume=self._resume)
                reply = await self.client.request(hello, timeout)
            except (TimeoutError, ConnectionResetError):
                self._check_not_lost()
                log.info("auctioneer not answering hello; retrying in %.1fs", delay)
                self.client.connect()
            else:
                self._last_contact = time.monotonic()
                if isinstance(reply, Welcome):
                    self._keep_resume_secret(reply.resume)
                    return reply
                if isinstance(reply, Error):
                    hint = ""
                    if reply.code == "NAME_TAKEN" and self.resume_file is None:
                        hint = " (an agent process returns under its name with --resume-file)"
                    raise AgentRejected(f"{reply.code}: {reply.message}{hint}")
                log.info("unexpected reply to hello (%s); retrying in %.1fs", reply.type, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _keep_resume_secret(self, secret: str | None) -> None:
        if secret is None or secret == self._resume:
            return
        self._resume = secret
        if self.resume_file is not None:
            write_resume_secret(self.resume_file, secret)

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
        if info.agents is not None and self.name not in info.agents:
            return
        report = self.report.market(info.id)
        try:
            draw_function(info.rules.mode)
        except UnknownDrawMode as exc:
            report.closed_reason = f"refused: cannot verify its draw ({exc})"
            self.report.verification_failures += 1
            log.error("not trading in market %s: %s", info.id, exc)
            return
        self.markets[info.id] = MarketState(info, report, deque(maxlen=self.history))
        assert self._follower is not None
        self._follower.follow(info.id)

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
            self._welcomed(await self._register())
            return
        self._last_contact = time.monotonic()
        if isinstance(reply, Error) and reply.code == "NOT_REGISTERED":
            self._welcomed(await self._register())
        elif isinstance(reply, Pong):
            self.report.spent = reply.spent
            self.budget = reply.budget  # an operator may have changed it
        else:
            log.debug("unexpected reply to ping: %s", reply.type)

    def _check_not_lost(self) -> None:
        silent = time.monotonic() - self._last_contact
        if silent > self.give_up_after:
            raise AuctioneerLost(f"no answer from the auctioneer for {silent:.0f}s")

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
        state = self.markets.get(event.market or "")
        if state is None:
            return
        if isinstance(event, SyncReply):
            self.report.resyncs += 1
            state.tokens = list(event.tokens)
            state.applied_round = max(state.applied_round, event.last_round)
            state.report.text = event.text
        elif isinstance(event, RoundOpen):
            self._round_opened(state, event)
        elif isinstance(event, RoundResult):
            self._apply_result(state, event)
        elif isinstance(event, MarketClosed):
            self._closed(state, event.reason, event.text)

    def _closed(self, state: MarketState, reason: str, text: str | None) -> None:
        """The market ended: record why, and let go of everything kept to trade in it (its state, its
        bids still open, its feed subscription). Only its report stays."""
        if state.report.closed_reason is None:
            state.report.closed_reason = reason
        if text is not None:
            state.report.text = text
        market = state.info.id
        if self.markets.get(market) is state:
            del self.markets[market]
            self._open_bids.drop_market(market)
            assert self._follower is not None
            self._follower.unfollow(market)

    def _round_opened(self, state: MarketState, announcement: RoundOpen) -> None:
        previous = state.announced.get(announcement.round)
        state.commitments[announcement.round] = announcement.seed_commitment
        state.announced[announcement.round] = announcement.seq
        reopened = previous is not None and previous != announcement.seq
        if reopened:
            # The auctioneer restarted and opened this round afresh (a market with a fixed seed even
            # commits to the same seed again): a bid it acknowledged before is gone with the old
            # round, so decide and bid again.
            log.warning("round %d of %s was reopened (the auctioneer restarted): bidding again", announcement.round,
                        state.info.id)  # fmt: skip
            self._open_bids.take(state.info.id, announcement.round)
            state.acknowledged.pop(announcement.round, None)
            state.report.record(announcement.round).status = "reopened"
        if announcement.round > state.decided_round or reopened:
            state.decided_round = announcement.round
            task = asyncio.create_task(self._decide_and_bid(state, announcement))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _apply_result(self, state: MarketState, result: RoundResult) -> None:
        own = self._open_bids.take(state.info.id, result.round)
        # The commitment to check is the one announced right before this result (seq - 1): an older
        # announcement of the round was superseded by a restart whose round_open this agent missed.
        announced = state.announced.pop(result.round, None)
        commitment = state.commitments.pop(result.round, None) if announced == result.seq - 1 else None
        answered = state.acknowledged.pop(result.round, None)
        acknowledged = answered == result.seq - 1
        if answered is not None and not acknowledged:
            # Acknowledged in an opening that a restart superseded, and the reopened round closed
            # before this agent heard of it (a feed gap): the bid went with the old opening.
            log.warning("market %s round %d: the bid acknowledged before a restart was not bid again in time",
                        state.info.id, result.round)  # fmt: skip
        if state.info.reference_agent == self.name:
            own = None  # this agent is the market's reference: its distribution is p_0, not a priced bid
        elif self.name not in result.bids and not acknowledged:
            own = None  # sent but never acknowledged: it may not have arrived, nothing to check
        rules = state.info.rules
        problems = result_problems(result, commitment, rules, own, rules.effective_reference_weight)
        for problem in problems:
            log.error("market %s round %d FAILED VERIFICATION: %s", state.info.id, result.round, problem)
        self.report.verification_failures += bool(problems)
        if result.round > state.applied_round:
            state.applied_round = result.round
            if result.token is not None:
                state.tokens.append(result.token)
        record = state.report.record(result.round)
        record.token = result.token
        record.payment = result.payments.get(self.name, 0.0)
        if own is not None:  # a payment for a bid of this run (the welcome and pongs count the others)
            self.report.spent += record.payment
        state.report.text = result.text
        state.recent.append(result)
        try:
            self.agent.observe(result, self._context(state, result.round, 0.0))
        except Exception:
            log.exception("agent.observe failed in market %s round %d", state.info.id, result.round)

    # --- deciding and bidding -----------------------------------------------------------------

    def _context(self, state: MarketState, number: int, timeout: float) -> RoundContext:
        prompt = state.info.rules.prompt
        return RoundContext(
            name=self.name,
            round=number,
            prompt=prompt,
            text=prompt + "".join(state.tokens),
            tokens=tuple(state.tokens),
            budget=self.budget,
            spent=self.report.spent,
            timeout=timeout,
            recent=tuple(state.recent),
            market=state.info,
            reserved=self._open_bids.total,
            decisions=self._decisions,
        )

    async def _decide_and_bid(self, state: MarketState, announcement: RoundOpen) -> None:
        remaining = min(announcement.timeout, announcement.deadline - time.time()) * (1 - DEADLINE_MARGIN)
        record = state.report.record(announcement.round)
        if remaining <= 0:
            record.status = "missed (joined late)"
            return
        started = time.monotonic()
        self._decisions += 1
        bid = await self._ask_agent(state, self._context(state, announcement.round, remaining), remaining, record)
        if bid is None:
            return
        market = state.info
        try:
            message = seal_bid(
                announcement.round, bid.distribution, float(bid.amount), market.rules.max_support, market.id
            )
        except ValueError as exc:
            record.status = "invalid (not sent)"
            log.error("market %s round %d: the agent's bid is invalid: %s", market.id, announcement.round, exc)
            return
        record.bid = float(bid.amount)
        # Known before the reply: the result may be broadcast before the acknowledgement is read.
        self._open_bids.add(market.id, announcement.round, OwnBid(self.name, dict(bid.distribution), float(bid.amount)))
        left = max(remaining - (time.monotonic() - started), 0.05) + DEADLINE_MARGIN * announcement.timeout
        try:
            reply = await self.client.request(message, left)
        except (TimeoutError, ConnectionResetError):
            record.status = "no answer"
            return
        if isinstance(reply, BidAccepted):
            record.status = "accepted"
            if announcement.round > state.applied_round:
                state.acknowledged[announcement.round] = announcement.seq
        elif isinstance(reply, Error):
            record.status = reply.code
            self._open_bids.take(market.id, announcement.round)
            log.warning("market %s round %d: bid refused: %s %s", market.id, announcement.round, reply.code,
                        reply.message)  # fmt: skip

    async def _ask_agent(
        self, state: MarketState, context: RoundContext, remaining: float, record: RoundRecord
    ) -> Bid | None:
        try:
            if is_async(self.agent):
                outcome = self.agent.decide(context)
                assert asyncio.iscoroutine(outcome) or isinstance(outcome, asyncio.Future)
                async with asyncio.timeout(remaining):  # (not wait_for: see MarketClient.request)
                    return await outcome
            if not self.agent.blocking:
                return cast(Bid | None, self.agent.decide(context))
            if state.thinking is not None and not state.thinking.done():
                record.status = "missed (still thinking)"
                return None
            state.thinking = asyncio.get_running_loop().run_in_executor(None, self.agent.decide, context)  # type: ignore[arg-type]
            async with asyncio.timeout(remaining):
                return await asyncio.shield(state.thinking)
        except TimeoutError:
            record.status = "missed (too slow)"
        except Exception:
            record.status = "agent error"
            log.exception("market %s round %d: agent.decide raised", state.info.id, context.round)
        return None


def read_resume_secret(path: Path | None) -> str | None:
    """The resume secret kept in ``path`` (None without a file, or before the first welcome wrote it)."""
    if path is None or not path.exists():
        return None
    return path.read_text(encoding="ascii").strip() or None


def write_resume_secret(path: Path, secret: str) -> None:
    """Keep the secret readable by this user only, replacing the file whole (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(secret + "\n")
    os.replace(partial, path)

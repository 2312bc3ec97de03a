"""The exchange: every market of one auctioneer, the agents registered with it, their budgets, and
the group commit.

Requests from the network go through :meth:`Exchange.handle` (a refused request changes nothing).
The clock goes through :meth:`Exchange.tick`: it decides every market whose round is due, commits
them all in **one** ledger transaction, and only then moves them on and queues their results; then
it opens the rounds that are ready. Everything to broadcast is queued and taken with
:meth:`Exchange.drain`, so nothing is announced before it is durable. No sockets here.

An agent registers once (one name, one budget for the exchange) and takes part in every market
that invites it. Liveness is exchange-wide: an agent is live while it sent anything within three
heartbeats; a round closes early when every live participant of its market has bid.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from auctioneer.accounts import Accounts
from auctioneer.ledger import Ledger, LedgerError, StoredMarket
from auctioneer.market import Decision, Market
from auctioneer.settings import MarketSettings, MarketSpec, ServeSettings
from protocol import LIMITS, ErrorCode, ProtocolError, encode
from protocol.errors import describe_validation_error
from protocol.market_rules import MarketRules
from protocol.messages import (
    BidAccepted,
    CloseMarket,
    Error,
    ExchangeHeartbeat,
    Hello,
    ListMarkets,
    MarketClosed,
    MarketEnded,
    MarketInfo,
    MarketList,
    MarketOpened,
    MarketStatus,
    MarketStatusReply,
    Message,
    OpenMarket,
    Ping,
    Pong,
    RoundOpen,
    RoundResult,
    SealedBid,
    SyncReply,
    SyncRequest,
    Welcome,
)

log = logging.getLogger(__name__)

LIVENESS_HEARTBEATS = 3
RECENT_MARKETS = 100
# A sync_reply carries stored results up to this many bytes (at least one), leaving room for its
# snapshot within what clients accept from the auctioneer; the rest is paged (``more``).
SYNC_RESULT_BYTES = LIMITS.from_auctioneer.max_message_bytes // 2

Broadcast = RoundOpen | RoundResult | MarketClosed | MarketOpened | MarketEnded
Queued = tuple[Broadcast, bytes]  # a broadcast and the bytes it goes out as (encoded once)


@dataclass
class AgentRecord:
    name: str
    peer: bytes
    identity: str | None
    last_seen: float


class Exchange:
    """One auctioneer's markets, agents and accounts, and the ledger that holds them."""

    def __init__(self, settings: ServeSettings, ledger: Ledger, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.ledger = ledger
        self.clock = clock
        self.accounts = Accounts(settings.budget_of, ledger.spent())
        self.agents: dict[str, AgentRecord] = {}
        self._peers: dict[bytes, str] = {}
        self.markets: dict[str, Market] = {}
        self.recent: deque[MarketStatus] = deque(maxlen=RECENT_MARKETS)
        self.exchange_seq = ledger.exchange_seq()
        self.default_market = ledger.default_market()
        self.opened_at_start = False
        self._outbox: list[Queued] = []
        self._deadlines: list[tuple[float, str, int]] = []  # (deadline, market, round) of open rounds
        self._openings: list[tuple[float, str]] = []  # (when the next round may open, market)
        self._unstarted: set[str] = set()  # markets waiting for min_agents before their first round
        self._complete: set[str] = set()  # markets whose open round every live participant bid in
        self._live: frozenset[str] = frozenset()
        self._live_version = 0
        self._live_checked = float("-inf")
        self._scanned_version = 0
        self._unstarted_version = 0
        self._reset_reservations()
        for stored in ledger.markets():
            if stored.closed is None:
                self._resume(stored)
            else:
                self.recent.append(self._closed_status(stored))

    def _reset_reservations(self) -> None:
        """Open rounds are not durable: after a restart no bid reserves anything."""
        stale = {agent: (budget, 0.0) for agent, (budget, reserved) in self.ledger.accounts().items() if reserved}
        if stale:
            self.ledger.commit([], accounts=stale)

    # --- markets --------------------------------------------------------------------------

    def start(self) -> None:
        """Open the markets the settings ask for at start (resuming those the ledger already holds)."""
        default = self.settings.default_market()
        if default is not None:
            self.opened_at_start = True
            if self.default_market is None:
                self.open_market(MarketSpec(), default=True)
            else:
                self._update_default_market(default)
        for spec in self.settings.markets:
            self.opened_at_start = True
            if spec.id is None or self.ledger.market(spec.id) is None:
                self.open_market(spec)

    def _update_default_market(self, settings: MarketSettings) -> None:
        """Restarted with the default market's settings: its definition may not change, the rest may."""
        stored = self.ledger.market(self.default_market or "")
        assert stored is not None
        previous = MarketSettings.model_validate(stored.definition["settings"])
        definition, wanted = previous.definition(), settings.definition()
        changed = sorted(k for k in wanted if definition.get(k) != wanted.get(k))
        if changed:
            raise LedgerError(
                f"{self.ledger.path} holds a market with different {', '.join(changed)} "
                f"({', '.join(f'{k}={definition.get(k)!r}' for k in changed)}); use the same settings or another --db"
            )
        self.ledger.update_definition(stored.id, {**stored.definition, "settings": settings.model_dump(mode="json")})
        if stored.closed is None:
            self._resume(self.ledger.market(stored.id) or stored)

    def _resume(self, stored: StoredMarket) -> Market:
        settings = MarketSettings.model_validate(stored.definition["settings"])
        return self._add(Market(self._info(stored.id, settings, stored.definition), settings, stored))

    def _add(self, market: Market) -> Market:
        self.markets[market.id] = market
        heapq.heappush(self._openings, (0.0, market.id))
        return market

    @staticmethod
    def _info(market_id: str, settings: MarketSettings, definition: dict[str, Any]) -> MarketInfo:
        return MarketInfo(
            id=market_id,
            rules=MarketRules.model_validate(settings.model_dump(exclude={"seed"})),
            agents=definition.get("agents"),
            reference_agent=definition.get("reference_agent"),
        )

    def open_market(self, spec: MarketSpec, default: bool = False) -> Market:
        """Open a market durably and queue its announcement (``INVALID_SETTINGS`` if it cannot run)."""
        market_id = spec.id or uuid.uuid4().hex[:12]
        if market_id in self.markets or self.ledger.market(market_id) is not None:
            raise ProtocolError(ErrorCode.INVALID_SETTINGS, f"a market {market_id!r} already exists", "market")
        try:
            settings = self.settings.market_settings(spec)
        except ValidationError as exc:
            raise ProtocolError(ErrorCode.INVALID_SETTINGS, describe_validation_error(exc), "settings") from None
        if not default and "seed" not in spec.settings and settings.seed is not None:
            # Markets must not share round seeds: derive this one's from the exchange's seed and its id.
            derived = hashlib.sha256(bytes.fromhex(settings.seed) + b"market" + market_id.encode()).hexdigest()
            settings = settings.model_copy(update={"seed": derived})
        definition = {
            "settings": settings.model_dump(mode="json"),
            "agents": spec.agents,
            "reference_agent": spec.reference_agent,
        }
        self.ledger.create_market(market_id, definition, self.clock(), self.exchange_seq + 1, default)
        self.exchange_seq += 1
        if default:
            self.default_market = market_id
        market = self._add(Market(self._info(market_id, settings, definition), settings))
        self._queue(MarketOpened(seq=self.exchange_seq, market=market.info))
        log.info("market %s opened: %r", market_id, settings.prompt)
        return market

    def close_market(self, market_id: str, reason: str = "operator") -> MarketStatus:
        """End a market now: an open round is abandoned (its bids released), never half-committed."""
        market = self._open_market(market_id)
        closed, abandoned = market.closing(reason)
        for agent, amount in abandoned.items():
            self.accounts.release(agent, amount)
        self._commit([], [closed], set(abandoned))
        market.ended(closed)
        self._retire(market)
        return market.status()

    def _open_market(self, market_id: str | None) -> Market:
        """The open market ``market_id`` names (or the default market): refusals say why not."""
        wanted = market_id or self.default_market
        if wanted is None:
            raise ProtocolError(ErrorCode.UNKNOWN_MARKET, "this exchange has no default market: name one", "market")
        market = self.markets.get(wanted)
        if market is not None:
            return market
        if self.ledger.market(wanted) is not None:
            raise ProtocolError(ErrorCode.MARKET_CLOSED, f"market {wanted} has ended")
        raise ProtocolError(ErrorCode.UNKNOWN_MARKET, f"no market {wanted!r}", "market")

    def _retire(self, market: Market) -> None:
        assert market.closed is not None
        del self.markets[market.id]
        self._complete.discard(market.id)
        self._unstarted.discard(market.id)
        self.recent.append(market.status())
        self._queue(market.closed)
        self.exchange_seq += 1
        self._queue(
            MarketEnded(seq=self.exchange_seq, market=market.id, reason=market.closed.reason, rounds=market.last_round)
        )

    @property
    def finished(self) -> bool:
        """Started with markets, all of them ended, and not asked to stay."""
        return self.opened_at_start and not self.markets and not self.settings.stay

    # --- requests -------------------------------------------------------------------------

    def handle(self, peer: bytes, message: Message, identity: str | None = None, address: str | None = None) -> Message:
        """Answer one decoded request from ``peer`` (``identity``: its CurveZMQ key name; ``address``:
        its network address). Every reply echoes the request's ``id`` as ``re``."""
        try:
            return self._dispatch(peer, message, identity, address)
        except ProtocolError as exc:
            return Error(code=exc.code, message=exc.message, field=exc.field, re=message.id)

    def _dispatch(self, peer: bytes, message: Message, identity: str | None, address: str | None) -> Message:
        now = self.clock()
        name = self._peers.get(peer)
        if name is not None:
            self.agents[name].last_seen = now
        if isinstance(message, Hello):
            return self._register(peer, message, identity, now)
        if isinstance(message, SyncRequest):
            return self._sync(message)
        if isinstance(message, ListMarkets):
            statuses = [market.status() for market in self.markets.values()] + list(self.recent)
            return MarketList(seq=self.exchange_seq, markets=statuses, default=self.default_market, re=message.id)
        if isinstance(message, OpenMarket | CloseMarket):
            self._authorise_operator(identity, address)
            if isinstance(message, OpenMarket):
                spec = MarketSpec(
                    settings=message.settings,
                    id=message.market,
                    agents=message.agents,
                    reference_agent=message.reference_agent,
                )
                return MarketStatusReply(status=self.open_market(spec).status(), re=message.id)
            return MarketStatusReply(status=self.close_market(message.market), re=message.id)
        if not isinstance(message, Ping | SealedBid):
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"the auctioneer does not accept {message.type!r}", "type")
        if name is None:
            # Also the answer an agent's heartbeat gets after an auctioneer restart: register again.
            raise ProtocolError(ErrorCode.NOT_REGISTERED, "send hello first")
        if isinstance(message, Ping):
            default = self.markets.get(self.default_market or "")
            account = self.accounts[name]
            return Pong(
                seq=default.seq if default else self.exchange_seq,
                exchange_seq=self.exchange_seq,
                spent=account.spent,
                reserved=account.reserved,
                re=message.id,
            )
        return self._accept_bid(name, message, now)

    def _authorise_operator(self, identity: str | None, address: str | None) -> None:
        if self.settings.curve_secret is not None:
            if identity not in self.settings.operators:
                raise ProtocolError(ErrorCode.UNAUTHORIZED, f"key {identity!r} is not an operator of this exchange")
        elif address is None or not self.settings.is_operator_address(address):
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"operator requests are not accepted from {address}")

    def _register(self, peer: bytes, hello: Hello, identity: str | None, now: float) -> Welcome:
        if identity is not None and hello.name != identity:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"your key is authorised as {identity!r}, not {hello.name!r}")
        existing = self.agents.get(hello.name)
        if existing is not None and existing.peer != peer:
            if identity is None and self._is_live(existing, now):
                raise ProtocolError(ErrorCode.NAME_TAKEN, f"agent {hello.name!r} is connected from another peer")
            self._peers.pop(existing.peer, None)
            log.info("agent %s re-registered from a new connection", hello.name)
        elif existing is None:
            log.info("agent %s registered", hello.name)
        self.agents[hello.name] = AgentRecord(hello.name, peer, identity, now)
        self._peers[peer] = hello.name
        self._refresh_liveness(now, force=True)
        account = self.accounts[hello.name]
        default = self.markets.get(self.default_market or "")
        legacy: dict[str, Any] = {}
        if default is not None:
            settings = default.settings
            legacy = {
                "market": default.id,
                "prompt": settings.prompt,
                "seq": default.seq,
                "round": default.current.number if default.current else default.last_round,
                "mechanism": default.mechanism,
                "max_bid": settings.max_bid,
                "max_support": settings.max_support,
                "reference_weight": settings.effective_reference_weight,
            }
        return Welcome(
            name=hello.name,
            budget=account.budget,
            spent=account.spent,
            heartbeat_interval=self.settings.heartbeat_interval,
            exchange_seq=self.exchange_seq,
            markets=[market.info for market in self.markets.values() if market.invites(hello.name)],
            re=hello.id,
            **legacy,
        )

    def _accept_bid(self, name: str, bid: SealedBid, now: float) -> BidAccepted:
        market = self._open_market(bid.market)
        reference = market.check_bid(name, bid)
        if not reference:
            self.accounts.reserve(name, bid.bid)
        market.accept(name, bid, reference)
        self._refresh_liveness(now)
        if market.due(now, self._live, self._live_version):
            self._complete.add(market.id)
        return BidAccepted(round=bid.round, market=market.id, re=bid.id)

    def _sync(self, request: SyncRequest) -> SyncReply:
        """A market's snapshot and the results the requester missed (a closed market's from the ledger)."""
        market_id = request.market or self.default_market
        market = self.markets.get(market_id or "")
        stored = None if market is not None else self.ledger.market(market_id or "")
        if market_id is None or (market is None and stored is None):
            raise ProtocolError(ErrorCode.UNKNOWN_MARKET, f"no market {market_id!r}", "market")
        results, more = self.ledger.results_since(market_id, request.since_seq, request.limit, SYNC_RESULT_BYTES)
        reply = {"results": results, "more": more, "market": market_id, "re": request.id}
        if market is not None:
            return SyncReply.model_validate(
                {
                    **reply,
                    "seq": market.seq,
                    "last_round": market.last_round,
                    "prompt": market.settings.prompt,
                    "text": market.text,
                    "tokens": market.tokens,
                    "balances": market.balances,
                    "open_round": market.current.announcement if market.current else None,
                    "closed": market.closed,
                }
            )
        assert stored is not None
        prompt = str(stored.definition["settings"].get("prompt", ""))
        return SyncReply.model_validate(
            {
                **reply,
                "seq": stored.seq,
                "last_round": stored.last_round,
                "prompt": prompt,
                "text": prompt + "".join(stored.tokens),
                "tokens": stored.tokens,
                "balances": stored.balances,
                "closed": stored.closed,
            }
        )

    # --- liveness -------------------------------------------------------------------------

    def _is_live(self, agent: AgentRecord, now: float) -> bool:
        return now - agent.last_seen <= LIVENESS_HEARTBEATS * self.settings.heartbeat_interval

    def live_agents(self) -> list[str]:
        now = self.clock()
        return [name for name, agent in self.agents.items() if self._is_live(agent, now)]

    def _refresh_liveness(self, now: float, force: bool = False) -> None:
        """Recompute who is live at most every half heartbeat (or now, after a registration)."""
        if not force and now - self._live_checked <= self.settings.heartbeat_interval / 2:
            return
        self._live_checked = now
        live = frozenset(name for name, agent in self.agents.items() if self._is_live(agent, now))
        if live != self._live or force:
            self._live = live
            self._live_version += 1

    # --- the clock ------------------------------------------------------------------------

    def tick(self) -> None:
        """Close and commit every due round, then open every round that is ready; queue the broadcasts."""
        now = self.clock()
        self._refresh_liveness(now)
        due = self._due_markets(now)
        if due:
            decisions = [market.decide() for market in due]
            touched: set[str] = set()
            for decision in decisions:
                for agent, amount in decision.bids.items():
                    self.accounts.release(agent, amount, decision.result.payments.get(agent, 0.0))
                    touched.add(agent)
            self._commit(decisions, [d.closing for d in decisions if d.closing is not None], touched)
            for decision in decisions:
                market = decision.market
                market.committed(decision, now)
                self._outbox.append((decision.result, decision.record.payload))
                if market.closed is not None:
                    self._retire(market)
                else:
                    heapq.heappush(self._openings, (market.next_open_at, market.id))
        for market in self._ready_to_open(now):
            announcement = market.open_round(now)
            heapq.heappush(self._deadlines, (announcement.deadline, market.id, announcement.round))
            self._queue(announcement)

    def _ready_to_open(self, now: float) -> list[Market]:
        ready: dict[str, Market] = {}
        while self._openings and self._openings[0][0] <= now:
            _, market_id = heapq.heappop(self._openings)
            market = self.markets.get(market_id)
            if market is None:
                continue
            if market.can_open(now, self._live):
                ready[market_id] = market
            elif not market.started:
                self._unstarted.add(market_id)
        if self._unstarted and self._live_version != self._unstarted_version:
            self._unstarted_version = self._live_version
            for market_id in sorted(self._unstarted):
                market = self.markets[market_id]
                if market.can_open(now, self._live):
                    self._unstarted.discard(market_id)
                    ready[market_id] = market
        return list(ready.values())

    def _commit(self, decisions: list[Decision], closings: list[MarketClosed], agents: set[str]) -> None:
        """One transaction for every decided round and ended market (the notices' seq included)."""
        notices = len(closings)
        self.ledger.commit(
            [d.record for d in decisions],
            closings,
            self.accounts.snapshot(agents),
            self.exchange_seq + notices if notices else None,
            self.clock(),
        )

    def _due_markets(self, now: float) -> list[Market]:
        due = {market_id: self.markets[market_id] for market_id in self._complete if market_id in self.markets}
        self._complete.clear()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, market_id, number = heapq.heappop(self._deadlines)
            market = self.markets.get(market_id)
            if market is not None and market.current is not None and market.current.number == number:
                due[market_id] = market
        if self._live_version != self._scanned_version:
            # Someone went silent or joined: rounds may now be complete, or no longer.
            self._scanned_version = self._live_version
            for market in self.markets.values():
                if market.id not in due and market.due(now, self._live, self._live_version):
                    due[market.id] = market
        return list(due.values())

    def has_due(self) -> bool:
        """A round became complete since the last tick (the server ticks early)."""
        return bool(self._complete)

    def next_wake(self) -> float:
        """When :meth:`tick` next has something to do: a deadline, a pause's end, a liveness refresh."""
        wake = self.clock() + self.settings.heartbeat_interval / 2
        for queue in (self._deadlines, self._openings):
            if queue:
                wake = min(wake, queue[0][0])
        return wake

    def _queue(self, message: Broadcast) -> None:
        self._outbox.append((message, encode(message)))

    def drain(self) -> list[Queued]:
        """Everything queued for broadcast, in order, with its bytes (each already durable where it must be)."""
        queued, self._outbox = self._outbox, []
        return queued

    def heartbeats(self) -> list[Message]:
        now = self.clock()
        beats: list[Message] = [market.heartbeat(now) for market in self.markets.values()]
        beats.append(ExchangeHeartbeat(seq=self.exchange_seq, time=now))
        return beats

    # --- what is said about closed markets ------------------------------------------------

    @staticmethod
    def _closed_status(stored: StoredMarket) -> MarketStatus:
        settings = MarketSettings.model_validate(stored.definition["settings"])
        prompt = settings.prompt
        assert stored.closed is not None
        return MarketStatus(
            market=Exchange._info(stored.id, settings, stored.definition),
            round=stored.last_round,
            seq=stored.seq,
            text=prompt + "".join(stored.tokens),
            revenue=stored.revenue,
            closed=stored.closed.reason,
        )

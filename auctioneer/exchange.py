"""The exchange: every market of one auctioneer, the agents registered with it, their budgets, and
the group commit.

Requests from the network go through :meth:`Exchange.handle` (a refused request changes nothing).
The clock goes through :meth:`Exchange.tick`: it decides every market whose round is due, commits
them all in **one** ledger transaction, and only then moves them on and queues their results; then
it opens the rounds that are ready. Everything to broadcast is queued and taken with
:meth:`Exchange.drain`, so nothing is announced before it is durable. No sockets here.

An agent registers once (one name, one budget for the exchange, which operators may change while
it runs: :meth:`Exchange.set_budget`) and takes part in every market that invites it. Liveness is
exchange-wide: an agent is live while it sent anything within three heartbeats; a round closes
early when every engaged live participant of its market has answered (``auctioneer.market``).

Names: with CurveZMQ a name is the key's. Without, a name belongs to its first registrant: the
``welcome`` hands out a resume secret, and any later ``hello`` under that name must carry it
(``NAME_TAKEN`` otherwise, whether or not the holder is connected). The binding is made durable with
the agent's first committed bid. A connection holds one name; an address holds at most
``max_agents_per_address``; agents silent for :data:`FORGET_AFTER_HEARTBEATS` heartbeats with no
open bid are forgotten (what they paid stays in the ledger).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import logging
import math
import secrets
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from auctioneer.accounts import Account, Accounts
from auctioneer.ledger import Ledger, LedgerError, StoredMarket
from auctioneer.market import Decision, Market
from auctioneer.settings import MarketSettings, MarketSpec, ServeSettings
from protocol import ErrorCode, ProtocolError, encode
from protocol.codec import encode_with_encoded
from protocol.errors import describe_validation_error
from protocol.market_rules import MarketRules
from protocol.messages import (
    AccountStatus,
    BidAccepted,
    CloseMarket,
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
    SetBudget,
    SyncReply,
    SyncRequest,
    Welcome,
    assemble,
    refusal,
)

log = logging.getLogger(__name__)

LIVENESS_HEARTBEATS = 3
SILENT_NAMES_SHOWN = 5  # agents named when many go silent at once
FORGET_AFTER_HEARTBEATS = 30
RECENT_MARKETS = 100
# A sync_reply carries stored results up to this many bytes (at least one); the rest is paged
# (``more``). Small pages bound what one request makes the auctioneer read and hold.
SYNC_RESULT_BYTES = 1024 * 1024

Broadcast = RoundOpen | RoundResult | MarketClosed | MarketOpened | MarketEnded
Queued = tuple[Broadcast, bytes]  # a broadcast and the bytes it goes out as (encoded once)


@dataclass
class AgentRecord:
    name: str
    peer: bytes
    identity: str | None
    last_seen: float
    address: str | None = None
    secret_hash: str | None = None  # without CurveZMQ: the hash of the name's resume secret
    bound: bool = False  # the binding is in the ledger


def secret_hash(secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(secret)).hexdigest()


class Exchange:
    """One auctioneer's markets, agents and accounts, and the ledger that holds them."""

    def __init__(self, settings: ServeSettings, ledger: Ledger, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.ledger = ledger
        self.clock = clock
        self.accounts = Accounts(
            settings.budget_of,
            {agent: account.spent for agent, account in ledger.accounts().items() if account.spent},
            ledger.operator_budgets(),
        )
        self.agents: dict[str, AgentRecord] = {}
        self._peers: dict[bytes, str] = {}
        self._per_address: Counter[str] = Counter()
        self._swept = clock()
        self.markets: dict[str, Market] = {}
        self.recent: deque[MarketStatus] = deque(maxlen=RECENT_MARKETS)
        self.exchange_seq = ledger.exchange_seq()
        self.default_market = ledger.default_market()
        self.opened_at_start = False
        self._outbox: list[Queued] = []
        self._deadlines: list[tuple[float, str, int]] = []  # (deadline, market, round) of open rounds
        self._openings: list[tuple[float, str]] = []  # (when the next round may open, market)
        self._awaiting: set[str] = set()  # markets waiting for live agents (min_agents before round 1)
        self._complete: set[str] = set()  # markets whose open round every live participant bid in
        self._live: set[str] = set()
        self._live_version = 0
        self._live_checked = float("-inf")
        self._scanned_version = 0
        self._awaiting_version = 0
        self._reset_reservations()
        # Open markets and the last closed ones: start-up does not grow with the exchange's history.
        for stored in ledger.markets(open_only=True):
            self._resume(stored)
        ended = ledger.latest_markets(RECENT_MARKETS, ended_only=True)
        self.recent.extend(self._closed_status(stored) for stored in ended)

    def _reset_reservations(self) -> None:
        """Open rounds are not durable: after a restart no bid reserves anything."""
        accounts = self.ledger.accounts()
        stale = {agent: account._replace(reserved=0.0) for agent, account in accounts.items() if account.reserved}
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
            if spec.id is None or not self.ledger.has_market(spec.id):
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
        if market_id in self.markets or self.ledger.has_market(market_id):
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

    def set_budget(self, agent: str, budget: float | None) -> Account:
        """An operator's new budget for ``agent`` across the exchange (None: unlimited), durable before
        it applies; ``INVALID_SETTINGS`` if below what the agent has spent and reserved."""
        self.accounts.check_budget(agent, budget)
        self.ledger.set_budget(agent, self.accounts.state(agent)._replace(budget=budget), self.clock())
        log.info("budget of %s set to %s", agent, "unlimited" if budget is None else budget)
        return self.accounts.set_budget(agent, budget)

    def knows_market(self, market_id: str) -> bool:
        """Whether this exchange ever opened a market ``market_id`` (open or ended)."""
        return market_id in self.markets or self.ledger.has_market(market_id)

    def _open_market(self, market_id: str | None) -> Market:
        """The open market ``market_id`` names (or the default market): refusals say why not."""
        wanted = market_id or self.default_market
        if wanted is None:
            raise ProtocolError(ErrorCode.UNKNOWN_MARKET, "this exchange has no default market: name one", "market")
        market = self.markets.get(wanted)
        if market is not None:
            return market
        if self.ledger.has_market(wanted):
            raise ProtocolError(ErrorCode.MARKET_CLOSED, f"market {wanted} has ended")
        raise ProtocolError(ErrorCode.UNKNOWN_MARKET, f"no market {wanted!r}", "market")

    def _retire(self, market: Market) -> None:
        assert market.closed is not None
        del self.markets[market.id]
        self._complete.discard(market.id)
        self._awaiting.discard(market.id)
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

    def handle(
        self, peer: bytes, message: Message, identity: str | None = None, address: str | None = None
    ) -> Message | bytes:
        """Answer one decoded request from ``peer`` (``identity``: its CurveZMQ key name; ``address``:
        its network address). Every reply echoes the request's ``id`` as ``re``; a ``sync_reply``
        comes already encoded (it splices stored broadcasts as they are)."""
        try:
            return self._dispatch(peer, message, identity, address)
        except ProtocolError as exc:
            return refusal(exc, message.id)

    def _dispatch(self, peer: bytes, message: Message, identity: str | None, address: str | None) -> Message | bytes:
        now = self.clock()
        name = self._peers.get(peer)
        if name is not None:
            self.agents[name].last_seen = now
        if isinstance(message, Hello):
            return self._register(peer, message, identity, address, now)
        if isinstance(message, SyncRequest):
            return self._sync(message)
        if isinstance(message, ListMarkets):
            statuses = [market.status() for market in self.markets.values()] + list(self.recent)
            return MarketList(seq=self.exchange_seq, markets=statuses, default=self.default_market, re=message.id)
        if isinstance(message, OpenMarket | CloseMarket | SetBudget):
            self._authorise_operator(identity, address)
            if isinstance(message, SetBudget):
                account = self.set_budget(message.agent, message.budget)
                return AccountStatus(
                    agent=message.agent,
                    budget=account.budget,
                    spent=account.spent,
                    reserved=account.reserved,
                    re=message.id,
                )
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
            return assemble(  # the heartbeat's reply, from the exchange's own numbers: not validated again
                Pong,
                type="pong",
                id=None,
                re=message.id,
                seq=default.seq if default else self.exchange_seq,
                exchange_seq=self.exchange_seq,
                spent=account.spent,
                reserved=account.reserved,
                budget=account.budget,
            )
        return self._accept_bid(name, message, now)

    def _authorise_operator(self, identity: str | None, address: str | None) -> None:
        if self.settings.curve_secret is not None:
            if identity not in self.settings.operators:
                raise ProtocolError(ErrorCode.UNAUTHORIZED, f"key {identity!r} is not an operator of this exchange")
        elif address is None or not self.settings.is_operator_address(address):
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"operator requests are not accepted from {address}")

    def _register(self, peer: bytes, hello: Hello, identity: str | None, address: str | None, now: float) -> Welcome:
        if identity is not None and hello.name != identity:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"your key is authorised as {identity!r}, not {hello.name!r}")
        holder = self._peers.get(peer)
        if holder is not None and holder != hello.name:
            raise ProtocolError(
                ErrorCode.LIMIT_REACHED, f"this connection is registered as {holder!r}: one name per connection"
            )
        existing = self.agents.get(hello.name)
        secret, bound = (None, False) if identity is not None else self._resume_secret(hello, existing)
        if (
            existing is None
            and address is not None
            and self._per_address[address] >= self.settings.max_agents_per_address
        ):
            raise ProtocolError(
                ErrorCode.LIMIT_REACHED,
                f"{address} already has {self._per_address[address]} registered agents (the exchange's maximum)",
            )
        if existing is not None:
            self._unregister(existing)
            if existing.peer != peer:
                log.debug("agent %s re-registered from a new connection", hello.name)
        else:
            log.debug("agent %s registered", hello.name)
        record = AgentRecord(hello.name, peer, identity, now, address, secret and secret_hash(secret), bound)
        self.agents[hello.name] = record
        self._peers[peer] = hello.name
        if address is not None:
            self._per_address[address] += 1
        self._now_live(hello.name)
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
            resume=secret,
            budget=account.budget,
            spent=account.spent,
            heartbeat_interval=self.settings.heartbeat_interval,
            exchange_seq=self.exchange_seq,
            markets=[market.info for market in self.markets.values() if market.invites(hello.name)],
            re=hello.id,
            **legacy,
        )

    def _resume_secret(self, hello: Hello, existing: AgentRecord | None) -> tuple[str, bool]:
        """Without CurveZMQ a name belongs to its first registrant: a later ``hello`` must carry the
        secret its first ``welcome`` gave. The secret in effect for the name (a new one for a new name,
        or the one a returning agent proposes for a name the exchange does not know), and whether its
        binding is already in the ledger."""
        if existing is not None:
            bound, durable = existing.secret_hash, existing.bound
        else:
            bound = self.ledger.binding(hello.name)
            durable = bound is not None
        if bound is None:
            return hello.resume or secrets.token_hex(32), False
        if hello.resume is None or not hmac.compare_digest(secret_hash(hello.resume), bound):
            raise ProtocolError(
                ErrorCode.NAME_TAKEN,
                f"the name {hello.name!r} belongs to another agent: to return under it, send the resume "
                "secret its first welcome gave; otherwise choose another name",
                "resume",
            )
        return hello.resume, durable

    def _unregister(self, agent: AgentRecord) -> None:
        if self._peers.get(agent.peer) == agent.name:
            del self._peers[agent.peer]
        if agent.address is not None:
            self._per_address[agent.address] -= 1
            if not self._per_address[agent.address]:
                del self._per_address[agent.address]

    def _forget_silent(self, now: float) -> None:
        """Forget agents silent for long with no open bid (at most once a heartbeat)."""
        if now - self._swept < self.settings.heartbeat_interval:
            return
        self._swept = now
        horizon = FORGET_AFTER_HEARTBEATS * self.settings.heartbeat_interval
        silent = [agent for agent in self.agents.values() if now - agent.last_seen > horizon]
        for agent in silent:
            if self.accounts.forget(agent.name):
                self._unregister(agent)
                del self.agents[agent.name]
        if silent:
            log.debug("forgot %d silent agents", len(silent))

    def precheck_bid(self, peer: bytes, fields: Mapping[str, Any]) -> None:
        """Refuse a ``sealed_bid`` (still a decoded map) that its sender, market or round already
        refuse, before its distribution is examined: a late or misdirected bid costs little however
        large. Fields of the wrong type are left for the message's own checks to word."""
        name = self._peers.get(peer)
        if name is None:
            raise ProtocolError(ErrorCode.NOT_REGISTERED, "send hello first")
        market, number, amount = fields.get("market"), fields.get("round"), fields.get("bid")
        if (
            (market is None or isinstance(market, str))
            and type(number) is int
            and 1 <= number < 2**63
            and isinstance(amount, int | float)
            and math.isfinite(amount)
        ):
            self._open_market(market).check_round(name, number, float(amount))

    def _accept_bid(self, name: str, bid: SealedBid, now: float) -> BidAccepted:
        market = self._open_market(bid.market)
        reference = market.check_bid(name, bid)
        if not reference:
            self.accounts.reserve(name, bid.bid)
        market.accept(name, bid, reference)
        self._refresh_liveness(now)
        if market.due(now, self._live, self._live_version):
            self._complete.add(market.id)
        # Every field from values already checked: assembled, not validated again (one per bid).
        return assemble(BidAccepted, type="bid_accepted", id=None, re=bid.id, round=bid.round, market=market.id)

    def _sync(self, request: SyncRequest) -> bytes:
        """A market's snapshot and the results the requester missed (a closed market's from the
        ledger), encoded: the stored results go out as the bytes they were broadcast as."""
        market_id = request.market or self.default_market
        market = self.markets.get(market_id or "")
        stored = None if market is not None else self.ledger.market(market_id or "")
        if market_id is None or (market is None and stored is None):
            raise ProtocolError(ErrorCode.UNKNOWN_MARKET, f"no market {market_id!r}", "market")
        results, more = self.ledger.results_since(market_id, request.since_seq, request.limit, SYNC_RESULT_BYTES)
        reply = {"results": [], "more": more, "market": market_id, "re": request.id}
        snapshot: SyncReply
        if market is not None:
            snapshot = SyncReply.model_validate(
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
            return encode_with_encoded(snapshot, "results", results)
        assert stored is not None
        prompt = str(stored.definition["settings"].get("prompt", ""))
        snapshot = SyncReply.model_validate(
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
        return encode_with_encoded(snapshot, "results", results)

    # --- liveness -------------------------------------------------------------------------

    def _is_live(self, agent: AgentRecord, now: float) -> bool:
        return now - agent.last_seen <= LIVENESS_HEARTBEATS * self.settings.heartbeat_interval

    def live_agents(self) -> list[str]:
        now = self.clock()
        return [name for name, agent in self.agents.items() if self._is_live(agent, now)]

    def _refresh_liveness(self, now: float) -> None:
        """Recompute who is live, at most every half heartbeat."""
        if now - self._live_checked <= self.settings.heartbeat_interval / 2:
            return
        self._live_checked = now
        live = {name for name, agent in self.agents.items() if self._is_live(agent, now)}
        if live != self._live:
            self._report_silent(sorted(self._live - live))
            self._live = live
            self._live_version += 1

    def _report_silent(self, names: list[str]) -> None:
        """Tell the operator who stopped counting as live (one line, however many went at once)."""
        if not names:
            return
        limit = LIVENESS_HEARTBEATS * self.settings.heartbeat_interval
        shown = ", ".join(names[:SILENT_NAMES_SHOWN]) + (", ..." if len(names) > SILENT_NAMES_SHOWN else "")
        who = f"agent {shown}" if len(names) == 1 else f"{len(names)} agents ({shown})"
        log.info("%s silent for over %.1f s: rounds no longer wait for them", who, limit)

    def _now_live(self, name: str) -> None:
        """A registration: the agent is live from now on (without recomputing everyone's liveness)."""
        if name not in self._live:
            self._live.add(name)
            self._live_version += 1

    # --- the clock ------------------------------------------------------------------------

    def tick(self) -> None:
        """Close and commit every due round, then open every round that is ready; queue the broadcasts."""
        now = self.clock()
        self._refresh_liveness(now)
        self._forget_silent(now)
        due = self._due_markets(now)
        if due:
            decisions = [market.decide(self._attended(market)) for market in due]
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

    def _attended(self, market: Market) -> bool:
        """Whether a participant of ``market`` was heard from since its open round opened (asked only
        of rounds without bids: whether they count as idle)."""
        current = market.current
        assert current is not None
        if current.bids or current.reference_bid is not None:
            return True
        return any(a.last_seen >= current.opened_at for a in self.agents.values() if market.invites(a.name))

    def _ready_to_open(self, now: float) -> list[Market]:
        ready: dict[str, Market] = {}
        while self._openings and self._openings[0][0] <= now:
            _, market_id = heapq.heappop(self._openings)
            market = self.markets.get(market_id)
            if market is None:
                continue
            if market.can_open(now, self._live):
                ready[market_id] = market
            elif market.closed is None and market.current is None:
                self._awaiting.add(market_id)
        if self._awaiting and self._live_version != self._awaiting_version:
            self._awaiting_version = self._live_version
            for market_id in sorted(self._awaiting):
                market = self.markets[market_id]
                if market.can_open(now, self._live):
                    self._awaiting.discard(market_id)
                    ready[market_id] = market
        return list(ready.values())

    def _commit(self, decisions: list[Decision], closings: list[MarketClosed], agents: set[str]) -> None:
        """One transaction for every decided round and ended market (the notices' seq included), with
        the name bindings of the agents whose bids it settles."""
        notices = len(closings)
        unbound = [self.agents[a] for a in agents if a in self.agents and not self.agents[a].bound]
        self.ledger.commit(
            [d.record for d in decisions],
            closings,
            self.accounts.snapshot(agents),
            self.exchange_seq + notices if notices else None,
            self.clock(),
            {agent.name: agent.secret_hash for agent in unbound if agent.secret_hash is not None},
        )
        for agent in unbound:
            agent.bound = True

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

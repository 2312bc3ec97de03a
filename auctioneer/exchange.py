"""The exchange: every market of one auctioneer, composed with the rooms that serve it.

- :mod:`auctioneer.registry`: agents' names, the connections that hold them, resume secrets, liveness;
- :mod:`auctioneer.accounts`: budgets, what agents spent and what their open bids reserve;
- :mod:`auctioneer.dispatch`: the answer to each request type (one table), with
  :mod:`auctioneer.admission` for bids, :mod:`auctioneer.operators` and :mod:`auctioneer.sync`;
- :mod:`auctioneer.clock`: when rounds close and open, and the group commit;
- :mod:`auctioneer.market`: one market's rules, text and rounds.

The exchange itself holds the markets (open ones, the last closed ones, the default market), the
exchange's notice seq and the queue of broadcasts. Requests from the network go through
:meth:`Exchange.handle` (a refused request changes nothing); the clock through :meth:`Exchange.tick`.
Everything to broadcast is queued and taken with :meth:`Exchange.drain`, so nothing is announced
before it is durable. No sockets here.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from auctioneer import admission
from auctioneer.accounts import Account, Accounts
from auctioneer.admission import Admission
from auctioneer.clock import RoundClock
from auctioneer.directory import MarketDirectory
from auctioneer.dispatch import Reply, dispatch
from auctioneer.ledger import LedgerError, Store, StoredMarket, TickWrite
from auctioneer.market import Market, market_info, stored_status
from auctioneer.registry import FORGET_AFTER_HEARTBEATS, AgentRecord, AgentRegistry
from auctioneer.settings import MarketSettings, MarketSpec, ServeSettings, participation_problem
from auctioneer.shards import Shard, SoleShard
from protocol import ErrorCode, ProtocolError, encode
from protocol.errors import describe_validation_error
from protocol.messages import (
    ExchangeHeartbeat,
    MarketClosed,
    MarketEnded,
    MarketOpened,
    MarketStatus,
    Message,
    RoundOpen,
    RoundResult,
)

__all__ = ["FORGET_AFTER_HEARTBEATS", "RECENT_MARKETS", "Exchange"]

log = logging.getLogger(__name__)

RECENT_MARKETS = 100

Broadcast = RoundOpen | RoundResult | MarketClosed | MarketOpened | MarketEnded
Queued = tuple[Broadcast, bytes]  # a broadcast and the bytes it goes out as (encoded once)


class Exchange:
    """One auctioneer's markets, agents and accounts, and the ledger that holds them."""

    def __init__(
        self,
        settings: ServeSettings,
        ledger: Store,
        clock: Callable[[], float] = time.time,
        shard: Shard | None = None,
    ) -> None:
        """``shard``: this process's part in an exchange of several (default: the whole exchange)."""
        self.settings = settings
        self.ledger = ledger
        self.clock = clock
        self.shard = shard or SoleShard(settings.market, settings.feed)
        self.accounts = Accounts(
            settings.budget_of,
            {agent: account.spent for agent, account in ledger.accounts().items() if account.spent},
            ledger.operator_budgets(),
            self.shard,
            clock,
        )
        self.registry = AgentRegistry(settings, ledger.binding, clock())
        self.round_clock = RoundClock(self)
        self.markets: dict[str, Market] = {}
        self.recent: deque[MarketStatus] = deque(maxlen=RECENT_MARKETS)
        self.exchange_seq = ledger.exchange_seq()
        self.default_market = ledger.default_market()
        self.opened_at_start = False
        self._outbox: list[Queued] = []
        self.directory = MarketDirectory(self)
        self._reset_reservations()
        # Open markets (this shard's) and the last closed ones: start-up does not grow with history.
        open_markets = {stored.id: stored for stored in ledger.markets(open_only=True)}
        for market_id in self.shard.owned(open_markets):
            self.resume(open_markets[market_id])
        self.recent.extend(stored_status(stored) for stored in ledger.latest_markets(RECENT_MARKETS, ended_only=True))

    def _reset_reservations(self) -> None:
        """Open rounds are not durable: after a restart no bid reserves anything."""
        accounts = self.ledger.accounts()
        stale = {agent: account._replace(reserved=0.0) for agent, account in accounts.items() if account.reserved}
        if stale:
            self.ledger.commit(TickWrite(accounts=stale))

    @property
    def agents(self) -> dict[str, AgentRecord]:
        return self.registry.agents

    def live_agents(self) -> list[str]:
        return self.registry.live_agents(self.clock())

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
                f"{self.ledger.location} holds a market with different {', '.join(changed)} "
                f"({', '.join(f'{k}={definition.get(k)!r}' for k in changed)}); use the same settings or another --db"
            )
        self.ledger.update_definition(stored.id, {**stored.definition, "settings": settings.model_dump(mode="json")})
        if stored.closed is None:
            self.resume(self.ledger.market(stored.id) or stored)

    def resume(self, stored: StoredMarket) -> Market:
        settings = MarketSettings.model_validate(stored.definition["settings"])
        info = market_info(stored.id, settings, stored.definition, self.directory.here)
        return self._add(Market(info, settings, stored))

    def _add(self, market: Market) -> Market:
        self.markets[market.id] = market
        self.round_clock.schedule_opening(market)
        return market

    def place_market(self, spec: MarketSpec) -> MarketStatus:
        """An operator's ``open_market``: opened on the shard placement chooses (this one, in an
        exchange of one process); its status, saying where it is."""
        location = self.shard.place(spec.shard)
        if location.shard == self.shard.name:
            return self.open_market(spec).status()
        market_id, settings, definition = self._definition(spec, default=False)
        self.ledger.create_market(market_id, definition, self.clock(), self.exchange_seq, False, location.shard)
        self.shard.notify("placed", market_id)  # it takes it up, and every shard announces it
        log.info("market %s opened on shard %s: %r", market_id, location.shard, settings.prompt)
        info = market_info(market_id, settings, definition, location)
        return MarketStatus(market=info, round=0, seq=0, text=settings.prompt, revenue=0.0)

    def open_market(self, spec: MarketSpec, default: bool = False) -> Market:
        """Open a market on this shard, durably, and queue its announcement (``INVALID_SETTINGS`` if
        it cannot run)."""
        market_id, settings, definition = self._definition(spec, default)
        self.ledger.create_market(market_id, definition, self.clock(), self.exchange_seq + 1, default)
        self.shard.adopt(market_id)
        self.exchange_seq += 1
        if default:
            self.default_market = market_id
        market = self._add(Market(market_info(market_id, settings, definition, self.directory.here), settings))
        self.queue(MarketOpened(seq=self.exchange_seq, market=market.info))
        self.shard.notify("opened", market_id)
        log.info("market %s opened: %r", market_id, settings.prompt)
        return market

    def _definition(self, spec: MarketSpec, default: bool) -> tuple[str, MarketSettings, dict[str, Any]]:
        """A new market's id, settings and stored definition, or the refusal (``INVALID_SETTINGS``)."""
        market_id = spec.id or uuid.uuid4().hex[:12]
        if self.knows_market(market_id):
            raise ProtocolError(ErrorCode.INVALID_SETTINGS, f"a market {market_id!r} already exists", "market")
        try:
            settings = self.settings.market_settings(spec)
        except ValidationError as exc:
            raise ProtocolError(ErrorCode.INVALID_SETTINGS, describe_validation_error(exc), "settings") from None
        problem = participation_problem(settings, spec)
        if problem is not None:
            raise ProtocolError(ErrorCode.INVALID_SETTINGS, f"{problem[0]}: {problem[1]}", problem[0])
        if not default and "seed" not in spec.settings and settings.seed is not None:
            # Markets must not share round seeds: derive this one's from the exchange's seed and its id.
            derived = hashlib.sha256(bytes.fromhex(settings.seed) + b"market" + market_id.encode()).hexdigest()
            settings = settings.model_copy(update={"seed": derived})
        definition = {
            "settings": settings.model_dump(mode="json"),
            "agents": spec.agents,
            "reference_agent": spec.reference_agent,
        }
        return market_id, settings, definition

    def close_market(self, market_id: str, reason: str = "operator") -> MarketStatus:
        """End a market now: an open round is abandoned (its bids released), never half-committed."""
        market = self.open_market_named(market_id)
        closed, abandoned = market.closing(reason)
        self.round_clock.commit([], [closed], abandoned)
        if market.id not in self.markets:  # another shard took it meanwhile
            raise ProtocolError(ErrorCode.MARKET_CLOSED, f"market {market.id} moved to another shard: close it there")
        for agent, amount in abandoned.items():
            self.accounts.release(agent, amount)
        market.ended(closed)
        self.retire(market)
        return market.status()

    def set_budget(self, agent: str, budget: float | None) -> Account:
        """An operator's new budget for ``agent`` across the exchange (None: unlimited), durable before
        it applies; ``INVALID_SETTINGS`` if below what the agent has spent and reserved."""
        self.accounts.check_budget(agent, budget)
        try:
            self.ledger.set_budget(agent, self.accounts.state(agent)._replace(budget=budget), self.clock())
        except LedgerError as exc:
            raise ProtocolError(ErrorCode.INVALID_SETTINGS, str(exc), "budget") from None
        self.shard.notify("budget", agent)
        log.info("budget of %s set to %s", agent, "unlimited" if budget is None else budget)
        return self.accounts.set_budget(agent, budget)

    @property
    def finished(self) -> bool:
        """Started with markets, all of them ended, and not asked to stay."""
        return self.opened_at_start and not self.markets and not self.settings.stay

    def knows_market(self, market_id: str) -> bool:
        """Whether this exchange ever opened a market ``market_id`` (open or ended)."""
        return market_id in self.markets or self.ledger.has_market(market_id)

    def open_market_named(self, market_id: str | None) -> Market:
        """The open market ``market_id`` names (or the default market): refusals say why not."""
        wanted = market_id or self.default_market
        if wanted is None:
            raise ProtocolError(ErrorCode.UNKNOWN_MARKET, "this exchange has no default market: name one", "market")
        market = self.markets.get(wanted)
        if market is not None:
            return market
        elsewhere = self.directory.remote.get(wanted)
        if elsewhere is not None:
            info = elsewhere.market
            raise ProtocolError(
                ErrorCode.WRONG_SHARD,
                f"market {wanted} is served by shard {info.shard} at {info.market_endpoint}"
                f" (feed {info.feed_endpoint})",
                "market",
            )
        if self.ledger.has_market(wanted):
            raise ProtocolError(ErrorCode.MARKET_CLOSED, f"market {wanted} has ended")
        raise ProtocolError(ErrorCode.UNKNOWN_MARKET, f"no market {wanted!r}", "market")

    def let_go(self, market_id: str) -> None:
        """Another shard serves ``market_id`` now: its open round (if any) is abandoned here, unannounced
        (the new owner opens it again), and its bids released."""
        market = self.markets.pop(market_id, None)
        if market is None:
            return
        for agent, amount in market.closing("moved")[1].items():
            self.accounts.release(agent, amount)
        self.round_clock.forget(market)
        log.warning("market %s is served by another shard now", market_id)

    def retire(self, market: Market) -> None:
        """``market`` ended: it leaves the open markets, and its end is announced."""
        assert market.closed is not None
        del self.markets[market.id]
        self.round_clock.forget(market)
        self.recent.append(market.status())
        self.queue(market.closed)
        self.exchange_seq += 1
        self.queue(
            MarketEnded(seq=self.exchange_seq, market=market.id, reason=market.closed.reason, rounds=market.last_round)
        )

    # --- requests -------------------------------------------------------------------------

    def handle(
        self,
        peer: bytes,
        message: Message,
        identity: str | None = None,
        address: str | None = None,
        admitted: Admission | None = None,
    ) -> Reply:
        """Answer one decoded request from ``peer`` (``identity``: its CurveZMQ key name; ``address``:
        its network address; ``admitted``: its bid's admission by :meth:`admit_bid`, if it is one). A
        ``sync_reply`` comes already encoded (it splices stored broadcasts as they are)."""
        return dispatch(self, peer, message, identity, address, admitted)

    def admit_bid(self, peer: bytes, fields: Mapping[str, Any]) -> Admission | None:
        """Admit a ``sealed_bid`` that is still a decoded map, or refuse it, before its distribution
        is examined (``auctioneer.admission``)."""
        return admission.admit(self, peer, fields)

    # --- the clock and the feed -----------------------------------------------------------

    def tick(self) -> None:
        """Renew this shard's leases when due, close and commit every due round, then open every round
        that is ready; queue the broadcasts and tell the other shards what changed."""
        now = self.clock()
        self._pass_leases_if_due(now)
        self.round_clock.tick(now)
        self.shard.flush()

    async def tick_async(self) -> None:
        """:meth:`tick` with its commit awaited: on a store that waits on a server, requests are
        answered while it commits (``Store.commit_async``)."""
        self._pass_leases_if_due(self.clock())
        await self.round_clock.tick_async()
        self.shard.flush()

    def _pass_leases_if_due(self, now: float) -> None:
        if self.shard.due(now):
            self.directory.pass_leases(now)

    def has_due(self) -> bool:
        return self.round_clock.has_due()

    def next_wake(self) -> float:
        """When :meth:`tick` next has something to do: a round's, or this shard's lease pass."""
        return min(self.round_clock.next_wake(self.clock()), self.shard.next_due())

    def queue(self, message: Broadcast, payload: bytes | None = None) -> None:
        """Queue a broadcast (``payload``: its bytes, if already encoded)."""
        self._outbox.append((message, encode(message) if payload is None else payload))

    def drain(self) -> list[Queued]:
        """Everything queued for broadcast, in order, with its bytes (each already durable where it must be)."""
        queued, self._outbox = self._outbox, []
        return queued

    def heartbeats(self) -> list[Message]:
        now = self.clock()
        beats: list[Message] = [market.heartbeat(now) for market in self.markets.values()]
        beats.append(ExchangeHeartbeat(seq=self.exchange_seq, time=now))
        return beats

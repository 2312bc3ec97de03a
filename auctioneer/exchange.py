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
from auctioneer.dispatch import Reply, dispatch
from auctioneer.ledger import LedgerError, Store, StoredMarket
from auctioneer.market import Market, closed_status, market_info
from auctioneer.registry import FORGET_AFTER_HEARTBEATS, AgentRecord, AgentRegistry
from auctioneer.settings import MarketSettings, MarketSpec, ServeSettings, participation_problem
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

    def __init__(self, settings: ServeSettings, ledger: Store, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.ledger = ledger
        self.clock = clock
        self.accounts = Accounts(
            settings.budget_of,
            {agent: account.spent for agent, account in ledger.accounts().items() if account.spent},
            ledger.operator_budgets(),
        )
        self.registry = AgentRegistry(settings, ledger.binding, clock())
        self.round_clock = RoundClock(self)
        self.markets: dict[str, Market] = {}
        self.recent: deque[MarketStatus] = deque(maxlen=RECENT_MARKETS)
        self.exchange_seq = ledger.exchange_seq()
        self.default_market = ledger.default_market()
        self.opened_at_start = False
        self._outbox: list[Queued] = []
        self._reset_reservations()
        # Open markets and the last closed ones: start-up does not grow with the exchange's history.
        for stored in ledger.markets(open_only=True):
            self._resume(stored)
        self.recent.extend(closed_status(stored) for stored in ledger.latest_markets(RECENT_MARKETS, ended_only=True))

    def _reset_reservations(self) -> None:
        """Open rounds are not durable: after a restart no bid reserves anything."""
        accounts = self.ledger.accounts()
        stale = {agent: account._replace(reserved=0.0) for agent, account in accounts.items() if account.reserved}
        if stale:
            self.ledger.commit([], accounts=stale)

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
            self._resume(self.ledger.market(stored.id) or stored)

    def _resume(self, stored: StoredMarket) -> Market:
        settings = MarketSettings.model_validate(stored.definition["settings"])
        return self._add(Market(market_info(stored.id, settings, stored.definition), settings, stored))

    def _add(self, market: Market) -> Market:
        self.markets[market.id] = market
        self.round_clock.schedule_opening(market)
        return market

    def open_market(self, spec: MarketSpec, default: bool = False) -> Market:
        """Open a market durably and queue its announcement (``INVALID_SETTINGS`` if it cannot run)."""
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
        self.ledger.create_market(market_id, definition, self.clock(), self.exchange_seq + 1, default)
        self.exchange_seq += 1
        if default:
            self.default_market = market_id
        market = self._add(Market(market_info(market_id, settings, definition), settings))
        self.queue(MarketOpened(seq=self.exchange_seq, market=market.info))
        log.info("market %s opened: %r", market_id, settings.prompt)
        return market

    def close_market(self, market_id: str, reason: str = "operator") -> MarketStatus:
        """End a market now: an open round is abandoned (its bids released), never half-committed."""
        market = self.open_market_named(market_id)
        closed, abandoned = market.closing(reason)
        for agent, amount in abandoned.items():
            self.accounts.release(agent, amount)
        self.round_clock.commit([], [closed], set(abandoned))
        market.ended(closed)
        self.retire(market)
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

    def open_market_named(self, market_id: str | None) -> Market:
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

    @property
    def finished(self) -> bool:
        """Started with markets, all of them ended, and not asked to stay."""
        return self.opened_at_start and not self.markets and not self.settings.stay

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
        """Close and commit every due round, then open every round that is ready; queue the broadcasts."""
        self.round_clock.tick(self.clock())

    def has_due(self) -> bool:
        return self.round_clock.has_due()

    def next_wake(self) -> float:
        return self.round_clock.next_wake(self.clock())

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

"""The exchange's round clock and its group commit.

:meth:`RoundClock.tick` decides every market whose round is due, commits them all in **one** ledger
transaction (rounds, ended markets, the accounts they touched, new name bindings, the exchange's
notice seq), and only then moves them on and queues their results; then it opens the rounds that
are ready. A round is due at its deadline, or as soon as every engaged live participant answered
(``auctioneer.market``); a market opens its next round once its pause is over and an invited agent
is live. The clock keeps heaps of deadlines and openings, so a tick costs what is due, not what is
open; when liveness changes, every market is looked at once.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING

from auctioneer.ledger import FencedOut, Store, TickWrite
from auctioneer.market import Decision, Market
from protocol.messages import MarketClosed

if TYPE_CHECKING:
    from auctioneer.exchange import Exchange
    from auctioneer.registry import AgentRecord


def closings_of(decisions: list[Decision]) -> list[MarketClosed]:
    return [d.closing for d in decisions if d.closing is not None]


@dataclass(frozen=True)
class LedgerWrite:
    """One commit, ready to run (it reads nothing of the exchange: the exchange may move on meanwhile)."""

    ledger: Store
    tick: TickWrite
    unbound: list[AgentRecord]  # whose name binding it writes

    def run(self) -> None:
        self.ledger.commit(self.tick)

    async def run_async(self) -> None:
        await self.ledger.commit_async(self.tick)

    def done(self, decisions: list[Decision]) -> list[Decision]:
        """It ran: the agents' names are bound now; the decisions it committed."""
        for agent in self.unbound:
            agent.bound = True
        return decisions


class RoundClock:
    """When each market's rounds close and open, and the commit of every round that closes together."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self._deadlines: list[tuple[float, str, int]] = []  # (deadline, market, round) of open rounds
        self._openings: list[tuple[float, str]] = []  # (when the next round may open, market)
        self._awaiting: set[str] = set()  # markets waiting for live agents (min_agents before round 1)
        self._complete: set[str] = set()  # markets whose open round every live participant bid in
        self._scanned_version = 0
        self._awaiting_version = 0

    def schedule_opening(self, market: Market, at: float = 0.0) -> None:
        heapq.heappush(self._openings, (at, market.id))

    def forget(self, market: Market) -> None:
        """``market`` ended: nothing of it is due any more."""
        self._complete.discard(market.id)
        self._awaiting.discard(market.id)

    def bid_taken(self, market: Market, now: float) -> None:
        """A bid joined ``market``'s open round: the round is due at the next tick if it is complete."""
        registry = self.exchange.registry
        registry.refresh_liveness(now)
        if market.due(now, registry.live, registry.live_version):
            self._complete.add(market.id)

    def has_due(self) -> bool:
        """A round became complete since the last tick (the server ticks early)."""
        return bool(self._complete)

    def next_wake(self, now: float) -> float:
        """When :meth:`tick` next has something to do: a deadline, a pause's end, a liveness refresh."""
        wake = now + self.exchange.settings.heartbeat_interval / 2
        for queue in (self._deadlines, self._openings):
            if queue:
                wake = min(wake, queue[0][0])
        return wake

    # --- the tick -------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Close and commit every due round, then open every round that is ready; queue the broadcasts."""
        decided = self._decide_due(now)
        if decided:
            self._settle(self.commit(decided, closings_of(decided)), now)
        self._open_ready(now)

    async def tick_async(self) -> None:
        """:meth:`tick`, its ledger write awaited (``Store.commit_async``): on a store that waits on a
        server, requests are answered meanwhile. The rounds being committed take no more bids
        (``OpenRound.decided``)."""
        decided = self._decide_due(self.exchange.clock())
        if decided:
            decisions = decided
            while True:
                write = self._write(decisions, closings_of(decisions))
                try:
                    await write.run_async()
                except FencedOut as exc:
                    decisions = self._fenced_out(exc, decisions)
                    continue
                break
            self._settle(write.done(decisions), self.exchange.clock())
        self._open_ready(self.exchange.clock())

    def _decide_due(self, now: float) -> list[Decision]:
        """Run the mechanism on every round that is due (after refreshing who is live)."""
        exchange, registry = self.exchange, self.exchange.registry
        registry.refresh_liveness(now)
        registry.forget_silent(now, exchange.accounts.forget)
        return [market.decide(self._attended(market)) for market in self._due_markets(now)]

    def _settle(self, decisions: list[Decision], now: float) -> None:
        """The decisions are durable: settle their bids, move their markets on, queue their results."""
        exchange = self.exchange
        for decision in decisions:
            for agent, amount in decision.bids.items():
                exchange.accounts.release(agent, amount, decision.result.payments.get(agent, 0.0))
            market = decision.market
            market.committed(decision, now)
            exchange.queue(decision.result, decision.record.payload)
            if market.closed is not None:
                exchange.retire(market)
            else:
                self.schedule_opening(market, market.next_open_at)

    def _open_ready(self, now: float) -> None:
        for market in self._ready_to_open(now):
            announcement = market.open_round(now)
            heapq.heappush(self._deadlines, (announcement.deadline, market.id, announcement.round))
            self.exchange.queue(announcement)

    def commit(
        self, decisions: list[Decision], closings: list[MarketClosed], abandoned: dict[str, float] | None = None
    ) -> list[Decision]:
        """One transaction for every decided round and ended market (the notices' seq included), with
        the accounts their settlements leave and the name bindings of the agents whose bids they settle;
        fenced by the leases of the markets in it. A market another shard has taken is let go and the
        rest committed without it: the decisions committed are returned. ``abandoned``: the bids of an
        open round an operator's close abandons (agent -> reservation), released by the caller."""
        while True:
            write = self._write(decisions, closings, abandoned)
            try:
                write.run()
            except FencedOut as exc:
                decisions = self._fenced_out(exc, decisions)
                continue
            return write.done(decisions)

    def _write(
        self, decisions: list[Decision], closings: list[MarketClosed], abandoned: dict[str, float] | None = None
    ) -> LedgerWrite:
        """What committing ``decisions`` and ``closings`` writes, as the exchange stands now."""
        exchange = self.exchange
        settlements = [
            (agent, amount, decision.result.payments.get(agent, 0.0))
            for decision in decisions
            for agent, amount in decision.bids.items()
        ] + [(agent, amount, 0.0) for agent, amount in (abandoned or {}).items()]
        unbound = exchange.registry.unbound({agent for agent, _, _ in settlements})
        closings = [c for c in closings if c.market in exchange.markets]
        markets = {d.market.id for d in decisions} | {c.market or "" for c in closings}
        tick = TickWrite(
            rounds=[d.record for d in decisions],
            closings=closings,
            accounts=exchange.accounts.after(settlements),
            exchange_seq=exchange.exchange_seq + len(closings) if closings else None,
            committed_at=exchange.clock(),
            bindings={agent.name: agent.secret_hash for agent in unbound if agent.secret_hash is not None},
            fence=exchange.shard.fence(markets),
        )
        return LedgerWrite(exchange.ledger, tick, unbound)

    def _fenced_out(self, exc: FencedOut, decisions: list[Decision]) -> list[Decision]:
        """Another shard took ``exc.markets``: they are let go, and the other decisions kept."""
        for market_id in exc.markets:
            self.exchange.let_go(market_id)
        return [d for d in decisions if d.market.id not in exc.markets]

    def _attended(self, market: Market) -> bool:
        """Whether a participant of ``market`` was heard from since its open round opened (asked only
        of rounds without bids: whether they count as idle)."""
        current = market.current
        assert current is not None
        if current.bids or current.reference_bid is not None:
            return True
        return self.exchange.registry.heard_since(current.opened_at, market.invites)

    def _due_markets(self, now: float) -> list[Market]:
        markets, registry = self.exchange.markets, self.exchange.registry
        due = {market_id: markets[market_id] for market_id in self._complete if market_id in markets}
        self._complete.clear()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, market_id, number = heapq.heappop(self._deadlines)
            market = markets.get(market_id)
            if market is not None and market.current is not None and market.current.number == number:
                due[market_id] = market
        if registry.live_version != self._scanned_version:
            # Someone went silent or joined: rounds may now be complete, or no longer.
            self._scanned_version = registry.live_version
            for market in markets.values():
                if market.id not in due and market.due(now, registry.live, registry.live_version):
                    due[market.id] = market
        return list(due.values())

    def _ready_to_open(self, now: float) -> list[Market]:
        markets, live = self.exchange.markets, self.exchange.registry.live
        ready: dict[str, Market] = {}
        while self._openings and self._openings[0][0] <= now:
            _, market_id = heapq.heappop(self._openings)
            market = markets.get(market_id)
            if market is None:
                continue
            if market.can_open(now, live):
                ready[market_id] = market
            elif market.closed is None and market.current is None:
                self._awaiting.add(market_id)
        live_version = self.exchange.registry.live_version
        if self._awaiting and live_version != self._awaiting_version:
            self._awaiting_version = live_version
            for market_id in sorted(self._awaiting):
                market = markets[market_id]
                if market.can_open(now, live):
                    self._awaiting.discard(market_id)
                    ready[market_id] = market
        return list(ready.values())

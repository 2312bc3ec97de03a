"""Where an exchange's markets are: the markets other shards serve, and what this shard learns of
them at each pass over its leases.

In an exchange of one process there is nothing to know: every market is here. In an exchange of
several shards, :meth:`MarketDirectory.pass_leases` renews this shard's leases (``auctioneer.shards``),
lets go of markets another shard took, resumes markets placed here or claimed after their shard
died, gives back budget slices another shard wants, and keeps the directory of the other shards'
open markets current: a market that appears there, or moves, is announced on this shard's feed
(``market_opened``, with where it is), and one that ended is announced too (``market_ended``), so an
agent connected to any shard hears of every market and learns where to bid in it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from auctioneer.ledger import LedgerError, TickWrite
from auctioneer.market import stored_status
from auctioneer.shards import Location, PostgresShard
from protocol.messages import MarketEnded, MarketInfo, MarketOpened, MarketStatus, ShardInfo

if TYPE_CHECKING:
    from auctioneer.exchange import Exchange

log = logging.getLogger(__name__)


class MarketDirectory:
    """The other shards' open markets, as this shard last learned them."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        shard = exchange.shard
        # Where this shard's markets are, as clients reach them (said only in an exchange of several).
        self.here: Location | None = shard.location if isinstance(shard, PostgresShard) else None
        self.remote: dict[str, MarketStatus] = {}
        self.shards: list[ShardInfo] = []  # every live shard, as the last pass found them

    def statuses(self) -> list[MarketStatus]:
        return list(self.remote.values())

    def invited(self, agent: str) -> list[MarketInfo]:
        """The other shards' open markets that invite ``agent``."""
        return [
            status.market
            for status in self.remote.values()
            if status.market.agents is None or agent in status.market.agents or agent == status.market.reference_agent
        ]

    def pass_leases(self, now: float) -> None:
        """One pass over the leases (skipped, and tried again at the next, while the store is
        unreachable: leases renew in database time, so nothing is lost by a late pass)."""
        try:
            self._pass(now)
        except LedgerError as exc:
            log.warning("lease pass skipped: %s", exc)

    def _pass(self, now: float) -> None:
        exchange = self.exchange
        outcome = exchange.shard.lease_pass(now, list(exchange.markets))
        for market_id in outcome.lost:
            exchange.let_go(market_id)
        announced = False
        for market_id in outcome.gained:
            stored = exchange.ledger.market(market_id)
            if stored is None or stored.closed is not None or market_id in exchange.markets:
                continue
            market = exchange.resume(stored)
            self.remote.pop(market_id, None)
            exchange.exchange_seq += 1
            exchange.queue(MarketOpened(seq=exchange.exchange_seq, market=market.info))
            announced = True
        wanted = [notice.subject for notice in outcome.notices if notice.kind == "wanted"]
        exchange.accounts.give_back_idle(now, wanted)
        for notice in outcome.notices:
            if notice.kind == "budget":
                exchange.accounts.refresh(notice.subject)
        if self.here is not None:
            announced = self._refresh() or announced
            self.shards = [ShardInfo(shard=s.shard, market_endpoint=s.market_endpoint, feed_endpoint=s.feed_endpoint)
                           for s in exchange.shard.shards()]  # fmt: skip
        if announced:
            exchange.ledger.commit(TickWrite(exchange_seq=exchange.exchange_seq, committed_at=now))

    def _refresh(self) -> bool:
        """Bring the other shards' markets up to date, announcing changes; whether any was announced."""
        exchange = self.exchange
        locations = {
            m: where
            for m, where in exchange.shard.locations().items()
            if m not in exchange.markets and where.shard != exchange.shard.name
        }
        announced = False
        for market_id, where in locations.items():
            known = self.remote.get(market_id)
            if known is not None and known.market.shard == where.shard:
                continue
            stored = exchange.ledger.market(market_id)
            if stored is None or stored.closed is not None:
                continue
            status = self.remote[market_id] = stored_status(stored, where)
            exchange.exchange_seq += 1
            exchange.queue(MarketOpened(seq=exchange.exchange_seq, market=status.market))
            announced = True
        for market_id in [m for m in self.remote if m not in locations]:
            del self.remote[market_id]
            stored = exchange.ledger.market(market_id)
            if stored is not None and stored.closed is not None:
                exchange.recent.append(stored_status(stored))
                exchange.exchange_seq += 1
                exchange.queue(
                    MarketEnded(
                        seq=exchange.exchange_seq,
                        market=market_id,
                        reason=stored.closed.reason,
                        rounds=stored.last_round,
                    )
                )
                announced = True
        return announced

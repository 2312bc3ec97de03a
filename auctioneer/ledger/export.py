"""A ledger's record as JSON-ready documents (``auctioneer ledger [--json]``, the demo, simulations).

Built only from the reads of the :class:`~auctioneer.ledger.store.Store` interface, so that every
store exports the same documents: :class:`Exports` gives a store its ``document`` and ``overview``.
"""

from __future__ import annotations

from typing import Any

from auctioneer.ledger.records import LedgerError, StoredRound, account_row
from auctioneer.ledger.store import Store


def round_document(record: StoredRound) -> dict[str, Any]:
    """One committed round: token, aggregate, bids, payments, sponsors, seed and commitment."""
    result = record.result
    return {
        "round": record.round,
        "token": record.token,
        "distribution": result.distribution.as_mapping() if result.distribution else {},
        "bids": {b.agent: {"bid": b.bid, "distribution": b.distribution()} for b in record.bids},
        "payments": record.payments,
        "sponsors": record.sponsors,
        "seed": record.seed.hex(),
        "seed_commitment": record.seed_commitment,
    }


class Exports:
    """``document`` and ``overview`` for a store (mixed into each store class)."""

    def document(self: Store, market: str | None = None) -> dict[str, Any]:
        """One market's whole record (``auctioneer ledger --market ID --json``). Without ``market``:
        the default market, or the only one."""
        if market is None:
            market = self.default_market()
        if market is None:
            ids = self.market_ids()
            if len(ids) != 1:
                raise LedgerError(f"{self.location} holds {len(ids)} markets: name one (--market ID)")
            market = ids[0]
        stored = self.market(market)
        if stored is None:
            raise LedgerError(
                f"{self.location} holds no market {market!r} (see auctioneer ledger --db {self.location})"
            )
        return {
            "market": market,
            "prompt": stored.prompt,
            "text": stored.text,
            "closed": stored.closed.reason if stored.closed else None,
            "settings": stored.definition.get("settings", {}),
            "agents": stored.definition.get("agents"),
            "reference_agent": stored.definition.get("reference_agent"),
            "rounds": [round_document(record) for record in self.rounds(market)],
            "balances": stored.balances,
        }

    def overview(self: Store, last: int | None = None) -> dict[str, Any]:
        """Every market (or the ``last`` opened) and every agent's budget account (``auctioneer
        ledger`` on an exchange); ``market_count`` counts them all."""
        markets = [
            {
                "market": stored.id,
                "prompt": stored.prompt,
                "rounds": stored.last_round,
                "text": stored.text,
                "revenue": stored.revenue,
                "closed": stored.closed.reason if stored.closed else None,
            }
            for stored in (self.markets() if last is None else self.latest_markets(last))
        ]
        return {
            "market_count": self.market_count(),
            "markets": markets,
            "accounts": {agent: account_row(account) for agent, account in self.accounts().items()},
            "commits": self.commits(),
        }

"""What the dashboard shows, folded from the feed: the markets, and per market its text token by
token (each with its sponsors, the round's bids, payments and the aggregate's top tokens), the
agents' balances and the revenue over rounds. Each market is the feed's one fold
(:class:`~protocol.market_state.MarketState`) with the page's entries on top. Pure state, no I/O;
every change bumps ``version``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from protocol.client import MarketUnknown
from protocol.market_state import MarketEvent, MarketState
from protocol.messages import (
    MarketClosed,
    MarketEnded,
    MarketList,
    MarketOpened,
    Message,
    RoundOpen,
    RoundResult,
    SyncReply,
)

TOP_TOKENS = 5
RECENT_CLOSED = 50  # closed markets kept in the list, newest first


@dataclass
class MarketBoard(MarketState):
    """One market as the page shows it: the feed's fold, and an entry per committed round."""

    paid: float = 0.0  # the sum of the payments of ``rounds``
    rounds: list[dict[str, Any]] = field(default_factory=list)  # one entry per committed round, in order

    def apply(self, event: MarketEvent) -> bool:
        new = super().apply(event)
        if new and isinstance(event, RoundResult):
            self.rounds.append(round_entry(event))
            self.paid += sum(event.payments.values())
        return new

    @property
    def revenue(self) -> float:
        return self.paid if self.rounds else self.listed_revenue

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "text": self.text,
            "round": self.round,
            "closed": self.closed,
            "revenue": self.revenue,
        }


def round_entry(result: RoundResult) -> dict[str, Any]:
    """A committed round as the page draws it: the token, its main sponsor and everything a hover shows."""
    top: list[list[Any]] = []
    if result.distribution is not None:
        ranked = sorted(result.distribution.as_mapping().items(), key=lambda kv: -kv[1])[:TOP_TOKENS]
        top = [[token, float(p)] for token, p in ranked]
    sponsor = max(result.sponsors.items(), key=lambda kv: kv[1])[0] if result.sponsors else None
    return {
        "round": result.round,
        "token": result.token,
        "sponsor": sponsor,
        "sponsors": dict(result.sponsors),
        "bids": dict(result.bids),
        "payments": dict(result.payments),
        "top": top,
    }


class Board:
    """Every market the spectator follows; ``reachable`` says whether the auctioneer answers."""

    def __init__(self) -> None:
        self.markets: dict[str, MarketBoard] = {}
        self.reachable = False
        self.since = time.time()  # when ``reachable`` last changed
        self.version = 0
        self.resyncs = 0

    def _changed(self) -> None:
        self.version += 1

    def set_reachable(self, reachable: bool) -> None:
        if reachable != self.reachable:
            self.reachable, self.since = reachable, time.time()
            self._changed()

    def market(self, market_id: str) -> MarketBoard:
        board = self.markets.get(market_id)
        if board is None:
            board = self.markets[market_id] = MarketBoard(market_id)
        return board

    def apply(self, message: Message | MarketUnknown) -> None:
        """Fold one feed event (or reply) in; other messages are ignored."""
        if isinstance(message, MarketList):
            before = [m.summary() for m in self.markets.values()]
            for status in message.markets:
                self.market(status.market.id).listed(status)
            if [m.summary() for m in self.markets.values()] == before:
                return  # the periodic listing changed nothing: the page is not sent it again
        elif isinstance(message, MarketOpened):
            self.market(message.market.id).opened(message.market.rules.prompt)
        elif isinstance(message, MarketEnded):
            self.market(message.market).closed = message.reason
        elif isinstance(message, MarketUnknown):
            self.market(message.market).closed = "unknown to the exchange"
        elif isinstance(message, SyncReply | RoundOpen | RoundResult | MarketClosed) and message.market is not None:
            if isinstance(message, SyncReply):
                self.resyncs += 1
            if not self.market(message.market).apply(message):
                return
        else:
            return
        self._changed()

    def listing(self) -> list[dict[str, Any]]:
        """Open markets, then the most recent closed ones."""
        markets = list(self.markets.values())
        open_ = [m.summary() for m in markets if m.closed is None]
        closed = [m.summary() for m in markets if m.closed is not None][-RECENT_CLOSED:][::-1]
        return open_ + closed

    def state(self, market_id: str | None, since_round: int = 0) -> dict[str, Any]:
        """What the page needs: the markets, and the chosen market's rounds after ``since_round``."""
        state: dict[str, Any] = {
            "reachable": self.reachable,
            "since": self.since,
            "version": self.version,
            "markets": self.listing(),
        }
        board = self.markets.get(market_id or "")
        if board is not None:
            state["market"] = {
                **board.summary(),
                "open_round": board.open_round.round if board.open_round else None,
                "balances": board.balances,
                "rounds": [entry for entry in board.rounds if entry["round"] > since_round],
            }
        return state

"""One fold of a market's feed: what anyone following a market knows of it, from its events in order.

:class:`MarketState` takes the events a :class:`~protocol.client.FeedFollower` yields for one
market (a ``sync_reply`` snapshot, ``round_open``, ``round_result``, ``market_closed``) and the
market's entries in a ``market_list``, and keeps its prompt, text, tokens, last committed round,
open round, balances, last result and why it closed. Every follower of a market (the agent
runtime, ``auctioneer watch``, the dashboard) folds the feed through it and keeps only what it adds
on top. Pure state, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.messages import MarketClosed, MarketStatus, RoundOpen, RoundResult, SyncReply

MarketEvent = SyncReply | RoundOpen | RoundResult | MarketClosed


@dataclass
class MarketState:
    """A market as its feed has told it so far."""

    id: str
    prompt: str = ""
    text: str = ""
    tokens: list[str] = field(default_factory=list)
    last_round: int = 0  # the last committed round the text, tokens and balances include
    seen_round: int = 0  # the last round whose result was handed on (a snapshot does not count)
    open_round: RoundOpen | None = None
    balances: dict[str, float] = field(default_factory=dict)  # agent -> total paid in the market
    last: RoundResult | None = None  # the latest result applied
    closed: str | None = None  # why it ended, once it has
    listed_round: int = 0  # from a market list, for a market whose rounds were not followed
    listed_revenue: float = 0.0

    def apply(self, event: MarketEvent) -> bool:
        """Fold one event in; False if it told nothing new (a result handed on before, replayed by a
        resync). A ``sync_reply`` is the market as it stands: the results a resync replays after it
        are handed on (each round's own figures are news) without moving the text back."""
        if isinstance(event, SyncReply):
            self.prompt, self.text, self.tokens = event.prompt, event.text, list(event.tokens)
            self.last_round = max(self.last_round, event.last_round)
            self.balances = dict(event.balances)
            if event.closed is not None:
                self.closed = event.closed.reason
        elif isinstance(event, RoundOpen):
            if event.round <= self.last_round:
                return False
            self.open_round = event
        elif isinstance(event, RoundResult):
            if event.round <= self.seen_round:
                return False
            self.seen_round, self.last = event.round, event
            if event.round > self.last_round:  # not already in a snapshot that came before it
                self.last_round, self.text = event.round, event.text
                if event.token is not None:
                    self.tokens.append(event.token)
                self.balances.update(event.balances)  # a result lists the totals of its own bidders
            if self.open_round is not None and self.open_round.round <= event.round:
                self.open_round = None
        else:
            self.closed, self.text, self.open_round = event.reason, event.text, None
        return True

    def listed(self, status: MarketStatus) -> None:
        """Fold the market's entry in a ``market_list`` (newer than what the feed told, or not)."""
        self.prompt = status.market.rules.prompt
        self.closed = status.closed or self.closed
        if status.round >= self.round:  # not behind what the feed told
            self.listed_round, self.text, self.listed_revenue = status.round, status.text, status.revenue

    def opened(self, prompt: str) -> None:
        """The market was announced (``market_opened``): its text is its prompt."""
        self.prompt = self.text = prompt

    @property
    def round(self) -> int:
        """The last committed round, or the round a market list told of if it is later."""
        return max(self.last_round, self.listed_round)

"""The bids an agent has sent whose rounds are not over yet, across every market, and what they hold.

A bid is kept from the moment it is sent until its round's result arrives (it is then checked
against the result), the auctioneer refuses it, the round is reopened after a restart, or its market
closes (an operator may close a market with a round open: that bid will never have a result).
What the kept bids add up to is the agent's ``reserved`` amount (``RoundContext.reserved``), asked
for in every decision and every result: it is kept as a running total, so asking costs the same
however many markets the agent is in.
"""

from __future__ import annotations

from agent_client.verify import OwnBid


class OpenBids:
    """Sent bids by market and round, with their amounts' total."""

    def __init__(self) -> None:
        self._by_market: dict[str, dict[int, OwnBid]] = {}
        self._total = 0.0

    @property
    def total(self) -> float:
        """The amounts of every kept bid, added up (exactly 0.0 when none is kept)."""
        return self._total

    def add(self, market: str, number: int, bid: OwnBid) -> None:
        """Keep ``bid``, sent in round ``number`` of ``market`` (replacing one kept for that round)."""
        self.take(market, number)
        self._by_market.setdefault(market, {})[number] = bid
        self._total += bid.amount

    def take(self, market: str, number: int) -> OwnBid | None:
        """The bid kept for round ``number`` of ``market``, no longer kept; None if there is none."""
        rounds = self._by_market.get(market)
        bid = rounds.pop(number, None) if rounds is not None else None
        if bid is not None:
            self._total -= bid.amount
            if not rounds:
                del self._by_market[market]
            self._settle()
        return bid

    def drop_market(self, market: str) -> None:
        """Forget every bid kept in ``market`` (it closed: none of them will have a result)."""
        for bid in self._by_market.pop(market, {}).values():
            self._total -= bid.amount
        self._settle()

    def _settle(self) -> None:
        # Adding and taking away the same amounts in another order can leave a rounding residue.
        if not self._by_market:
            self._total = 0.0

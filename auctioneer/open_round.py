"""A market's open round: the bids it has admitted, and what it admits more.

What a round admits is bounded whatever peers send: a bid over the market's ``max_bid`` or
``max_support`` is refused, and the distinct tokens a round's bids bring are capped
(``max_round_tokens``, separately for priced and for zero bids, so either way the result's
distribution is bounded): a bid that would pass the cap is refused with ``TOO_LARGE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from auctioneer.settings import MarketSettings
from protocol import ErrorCode, ProtocolError
from protocol.messages import RoundOpen, SealedBid


@dataclass
class TokenTally:
    """The distinct tokens of a round's bids, counted exactly only once a bid could pass the cap.

    While the accepted bids' supports add up to no more than the cap, no bid can pass it (distinct
    tokens are at most that sum), so their tokens are only kept, not hashed into a set; the set is
    built from them the first time a bid could pass, and kept up to date from then on."""

    supports: int = 0  # the accepted bids' support sizes added up: a bound on the distinct tokens
    _distinct: set[str] | None = None
    _uncounted: list[Sequence[str]] = field(default_factory=list)  # accepted before the set was needed

    def would_pass(self, tokens: Sequence[str], cap: int) -> bool:
        """Whether ``tokens`` would bring the distinct tokens above ``cap``."""
        if self.supports + len(tokens) <= cap:
            return False
        distinct = self._counted()
        # Counting the new tokens only matters near the cap (every token new cannot pass it otherwise).
        return len(distinct) + len(tokens) > cap and len(distinct) + len(set(tokens).difference(distinct)) > cap

    @property
    def distinct(self) -> int:
        return len(self._counted())

    def add(self, tokens: Sequence[str]) -> None:
        self.supports += len(tokens)
        if self._distinct is None:
            self._uncounted.append(tokens)
        else:
            self._distinct.update(tokens)

    def _counted(self) -> set[str]:
        if self._distinct is None:
            self._distinct = set().union(*self._uncounted)
            self._uncounted = []
        return self._distinct


@dataclass
class OpenRound:
    number: int
    seed: bytes
    announcement: RoundOpen
    opened_at: float
    bids: dict[str, SealedBid] = field(default_factory=dict)
    reference_bid: SealedBid | None = None
    priced_tokens: TokenTally = field(default_factory=TokenTally)  # of positive bids (and the reference's)
    free_tokens: TokenTally = field(default_factory=TokenTally)  # of zero bids
    answered: set[str] = field(default_factory=set)  # who bid while it was open
    paying: set[str] = field(default_factory=set)  # who bid a positive amount (or is the reference), even late
    decided: bool = False  # the mechanism ran on it: it takes no more bids while its commit is under way

    def _vocabulary(self, bid: SealedBid, reference: bool) -> TokenTally:
        return self.priced_tokens if reference or bid.bid > 0 else self.free_tokens

    def check(self, bid: SealedBid, reference: bool, settings: MarketSettings) -> None:
        """Raise the refusal for the content of ``bid`` (its amount and distribution against the
        market's limits), if any; ``reference``: the market's reference agent is speaking."""
        if not reference and bid.bid > settings.max_bid:
            raise ProtocolError(ErrorCode.INVALID_BID, f"bid exceeds the market maximum {settings.max_bid}", "bid")
        if len(bid.distribution.tokens) > settings.max_support:
            raise ProtocolError(ErrorCode.INVALID_DISTRIBUTION, "support exceeds the market maximum", "distribution")
        tally = self._vocabulary(bid, reference)
        if tally.would_pass(bid.distribution.tokens, settings.max_round_tokens):
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"round {bid.round} already has {tally.distinct} distinct tokens; yours would pass the market's "
                f"maximum of {settings.max_round_tokens}",
                "distribution",
            )

    def accept(self, agent: str, bid: SealedBid, reference: bool) -> None:
        """Take ``agent``'s checked bid into the round."""
        if reference:
            self.reference_bid = bid
        else:
            self.bids[agent] = bid
        self._vocabulary(bid, reference).add(bid.distribution.tokens)
        self.answered.add(agent)
        if reference or bid.bid > 0:
            self.paying.add(agent)

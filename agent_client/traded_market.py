"""One market an agent trades in: the feed's fold, the rounds it was announced and answered, and the
verification of every result (SPEC section 4: the commitment, the draw, the agent's own bid,
charge and sponsor share).

A round reopened after an auctioneer restart (same number, announced again under a new seq) is
bid again: the bid acknowledged before the restart went with the old round. A result is checked
against the commitment announced right before it (seq - 1), and against the agent's own bid only if
that bid was acknowledged for that announcement.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field

from agent_client.agent import Bid
from agent_client.report import MarketReport
from agent_client.verify import OwnBid, result_problems
from protocol.market_state import MarketState
from protocol.messages import MarketInfo, RoundOpen, RoundResult

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TradedMarket(MarketState):
    """What the runtime tracks of one market it takes part in."""

    info: MarketInfo
    report: MarketReport
    recent: deque[RoundResult]
    link: tuple[str, str]  # the market and feed endpoints of the shard serving it
    decided_round: int = 0
    commitments: dict[int, str] = field(default_factory=dict)
    announced: dict[int, int] = field(default_factory=dict)  # round -> seq of its latest round_open
    acknowledged: dict[int, int] = field(default_factory=dict)  # round -> seq of the round_open it answered
    thinking: asyncio.Future[Bid | None] | None = None

    def round_opened(self, announcement: RoundOpen) -> tuple[bool, bool]:
        """Note a ``round_open``: whether to decide and bid in it, and whether it reopens a round
        announced before (an auctioneer restarted: the bid it acknowledged is gone)."""
        previous = self.announced.get(announcement.round)
        self.commitments[announcement.round] = announcement.seed_commitment
        self.announced[announcement.round] = announcement.seq
        reopened = previous is not None and previous != announcement.seq
        if reopened:
            log.warning("round %d of %s was reopened (the auctioneer restarted): bidding again", announcement.round,
                        self.id)  # fmt: skip
            self.acknowledged.pop(announcement.round, None)
            self.report.record(announcement.round).status = "reopened"
        decide = announcement.round > self.decided_round or reopened
        if decide:
            self.decided_round = announcement.round
        return decide, reopened

    def bid_acknowledged(self, announcement: RoundOpen) -> None:
        if announcement.round > self.last_round:
            self.acknowledged[announcement.round] = announcement.seq

    def checked(self, result: RoundResult, own: OwnBid | None, name: str) -> tuple[list[str], OwnBid | None]:
        """Fold ``result`` in and check it (``own``: this agent's bid in its round, if it sent one):
        every problem found, and the bid the result settles (None if it settles none of this run's)."""
        announced = self.announced.pop(result.round, None)
        commitment = self.commitments.pop(result.round, None) if announced == result.seq - 1 else None
        answered = self.acknowledged.pop(result.round, None)
        acknowledged = answered == result.seq - 1
        if answered is not None and not acknowledged:
            # Acknowledged in an opening that a restart superseded, and the reopened round closed
            # before this agent heard of it (a feed gap): the bid went with the old opening.
            log.warning("market %s round %d: the bid acknowledged before a restart was not bid again in time",
                        self.id, result.round)  # fmt: skip
        if self.info.reference_agent == name:
            own = None  # this agent is the market's reference: its distribution is p_0, not a priced bid
        elif name not in result.bids and not acknowledged:
            own = None  # sent but never acknowledged: it may not have arrived, nothing to check
        rules = self.info.rules
        # b_0 of this round, as the result states it (SPEC 4.2); before revision 1.7, from the rules.
        weight = result.reference_weight if result.reference_weight is not None else rules.effective_reference_weight
        problems = result_problems(result, commitment, rules, own, weight)
        self.apply(result)
        record = self.report.record(result.round)
        record.token = result.token
        record.payment = result.payments.get(name, 0.0)
        self.report.text = self.text
        self.recent.append(result)
        return problems, own

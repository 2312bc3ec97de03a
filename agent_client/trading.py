"""The agent's side of every round it takes part in: asked to decide when a round opens, each result
checked against its own bids and shown to it, and what it is told each time (:class:`RoundContext`).

The runtime (:mod:`agent_client.runtime`) decides which markets the agent is in and routes their
feed events here; the budget the exchange reports (welcome, pongs) is kept on the :class:`Trader`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from agent_client.agent import Agent, RoundContext
from agent_client.deciding import decide_and_bid
from agent_client.open_bids import OpenBids
from agent_client.report import AgentReport
from agent_client.shard_link import ShardLinks
from agent_client.traded_market import TradedMarket
from protocol.messages import RoundOpen, RoundResult

log = logging.getLogger(__name__)


class Trader:
    """One agent's decisions and results across its markets."""

    def __init__(
        self,
        agent: Agent,
        name: str,
        report: AgentReport,
        links: ShardLinks,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        """``spawn``: runs a decision as a task of the agent's run."""
        self.agent = agent
        self.name = name
        self.report = report
        self.links = links
        self.spawn = spawn
        self.budget: float | None = None  # as the exchange last said (None: unlimited)
        self.open_bids = OpenBids()
        self.decisions = 0

    def round_opened(self, market: TradedMarket, announcement: RoundOpen) -> None:
        """A round opened: the agent is asked for its bid (once per round, a reopened round's old bid dropped)."""
        market.apply(announcement)
        decide, reopened = market.round_opened(announcement)
        if reopened:
            self.open_bids.take(market.id, announcement.round)
        if decide:

            def context(remaining: float) -> RoundContext:
                return self.context(market, announcement.round, remaining)

            self.spawn(decide_and_bid(self.agent, self.name, market, announcement, context, self.open_bids, self.links))

    def result(self, market: TradedMarket, result: RoundResult) -> None:
        """A round's result: verified (against this agent's own bid, if it made one), counted, observed."""
        problems, own = market.checked(result, self.open_bids.take(market.id, result.round), self.name)
        for problem in problems:
            log.error("market %s round %d FAILED VERIFICATION: %s", market.id, result.round, problem)
        self.report.verification_failures += bool(problems)
        if own is not None:  # a payment for a bid of this run (the welcome and pongs count the others)
            self.report.spent += result.payments.get(self.name, 0.0)
        try:
            self.agent.observe(result, self.context(market, result.round, 0.0))
        except Exception:
            log.exception("agent.observe failed in market %s round %d", market.id, result.round)

    def market_closed(self, market_id: str) -> None:
        """The market ended: its bids still open are let go."""
        self.open_bids.drop_market(market_id)

    def context(self, market: TradedMarket, number: int, timeout: float) -> RoundContext:
        """What the agent is told for one decision (counted: ``decisions``)."""
        self.decisions += 1
        prompt = market.info.rules.prompt
        return RoundContext(
            name=self.name,
            round=number,
            prompt=prompt,
            text=prompt + "".join(market.tokens),
            tokens=tuple(market.tokens),
            budget=self.budget,
            spent=self.report.spent,
            timeout=timeout,
            recent=tuple(market.recent),
            market=market.info,
            reserved=self.open_bids.total,
            decisions=self.decisions,
        )

"""Running a scenario without sockets: the real :class:`Market` and ledger, agents called directly.

Same mechanism, same validation, same ledger as a networked market, so thousands of rounds run in
seconds. Agents get the same :class:`RoundContext` the networked runtime gives them.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from pathlib import Path

from agent_client.agent import Agent, Bid, RoundContext
from agent_client.scenario import build_agent
from auctioneer.ledger import Ledger
from auctioneer.market import Market
from protocol.messages import Error, Hello, RoundResult, seal_bid
from simulation.scenario import Scenario

log = logging.getLogger(__name__)
HISTORY = 16


class InProcessAgent:
    """An agent plus what it has seen, as its runtime would track it."""

    def __init__(self, name: str, agent: Agent, budget: float | None) -> None:
        self.name = name
        self.agent = agent
        self.budget = budget
        self.peer = name.encode()
        self.recent: deque[RoundResult] = deque(maxlen=HISTORY)
        self.refusals = 0

    def context(self, market: Market, number: int) -> RoundContext:
        return RoundContext(
            name=self.name,
            round=number,
            prompt=market.settings.prompt,
            text=market.text,
            tokens=tuple(market.tokens),
            budget=self.budget,
            spent=market.spent.get(self.name, 0.0),
            timeout=market.settings.round_timeout,
            recent=tuple(self.recent),
            mechanism=market.mechanism,
        )

    def bid(self, market: Market, number: int) -> None:
        decision = self.agent.decide(self.context(market, number))
        if inspect.isawaitable(decision):
            raise TypeError(f"agent {self.name}: async agents need the networked simulation (drop --in-process)")
        if not isinstance(decision, Bid):
            return
        try:
            message = seal_bid(number, decision.distribution, float(decision.amount), market.settings.max_support)
        except ValueError as exc:
            log.warning("agent %s: invalid bid in round %d: %s", self.name, number, exc)
            self.refusals += 1
            return
        reply = market.handle(self.peer, message)
        if isinstance(reply, Error):
            self.refusals += 1
            log.info("agent %s: bid refused in round %d: %s", self.name, number, reply.code)

    def observe(self, market: Market, result: RoundResult) -> None:
        self.recent.append(result)
        self.agent.observe(result, self.context(market, result.round))


def run_in_process(scenario: Scenario, db: Path, seed: str, rounds: int | None, progress: object = None) -> Path:
    """Run the scenario to its end, writing the ledger to ``db``; returns ``db``."""
    settings = scenario.settings(db, seed, rounds)
    ledger = Ledger(db, durable=False)
    market = Market(settings, ledger, clock=lambda: 0.0)  # a constant clock: every agent stays live
    expected = settings.max_tokens
    agents = [
        InProcessAgent(spec.name, build_agent(spec, expected, int(seed[:8], 16)), settings.budget_of(spec.name))
        for spec in scenario.agents
    ]
    try:
        for agent in agents:
            market.handle(agent.peer, Hello(name=agent.name))
        while market.closed is None:
            number = market.open_round().round
            for agent in agents:
                agent.bid(market, number)
            for broadcast in market.close_round():
                if isinstance(broadcast, RoundResult):
                    for agent in agents:
                        agent.observe(market, broadcast)
            if callable(progress):
                progress(number)
    finally:
        ledger.close()
    return db

"""Running a scenario without sockets: the real :class:`Exchange` and ledger, agents called directly.

Same mechanism, same validation, same ledger as a networked market, on a simulated clock that jumps
to the exchange's next deadline whenever nothing else can happen, so thousands of rounds run in
seconds. Agents get the same :class:`RoundContext` the networked runtime gives them, and they bid
in every round the moment it opens.
"""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path

from agent_client.agent import Agent, Bid, RoundContext
from agent_client.scenario import build_agent
from auctioneer.exchange import Exchange
from auctioneer.ledger import Ledger
from auctioneer.market import Market
from protocol.messages import Error, Hello, Message, Ping, RoundOpen, RoundResult, seal_bid
from simulation.scenario import Scenario

log = logging.getLogger(__name__)
HISTORY = 16


class SimulatedClock:
    """Time that passes only when the driver moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class InProcessAgent:
    """An agent plus what it has seen, as its runtime would track it."""

    def __init__(self, name: str, agent: Agent) -> None:
        self.name = name
        self.agent = agent
        self.peer = name.encode()
        self.recent: defaultdict[str, deque[RoundResult]] = defaultdict(lambda: deque(maxlen=HISTORY))
        self.decisions = 0
        self.refusals = 0

    def context(self, exchange: Exchange, market: Market, number: int) -> RoundContext:
        account = exchange.accounts[self.name]
        return RoundContext(
            name=self.name,
            round=number,
            prompt=market.settings.prompt,
            text=market.text,
            tokens=tuple(market.tokens),
            budget=account.budget,
            spent=account.spent,
            timeout=market.settings.round_timeout,
            recent=tuple(self.recent[market.id]),
            market=market.info,
            reserved=account.reserved,
            decisions=self.decisions,
        )

    def bid(self, exchange: Exchange, market: Market, number: int) -> None:
        self.decisions += 1
        decision = self.agent.decide(self.context(exchange, market, number))
        if inspect.isawaitable(decision):
            raise TypeError(f"agent {self.name}: async agents need the networked simulation (drop --in-process)")
        if not isinstance(decision, Bid):
            return
        try:
            message = seal_bid(
                number, decision.distribution, float(decision.amount), market.settings.max_support, market.id
            )
        except ValueError as exc:
            log.warning("agent %s: invalid bid in round %d: %s", self.name, number, exc)
            self.refusals += 1
            return
        reply = exchange.handle(self.peer, message)
        if isinstance(reply, Error):
            self.refusals += 1
            log.info("agent %s: bid refused in round %d: %s", self.name, number, reply.code)

    def observe(self, exchange: Exchange, market: Market, result: RoundResult) -> None:
        self.recent[market.id].append(result)
        self.agent.observe(result, self.context(exchange, market, result.round))


def run_in_process(
    scenario: Scenario, db: Path, seed: int, rounds: int | None, progress: Callable[[int], object] | None = None
) -> Path:
    """Run the scenario's market to its end with a run's ``seed``, writing the ledger to ``db``; returns ``db``."""
    settings = scenario.settings(db, seed, rounds)
    clock = SimulatedClock()
    expected = rounds or scenario.expected_rounds()
    with Ledger(db, durable=False) as ledger:
        exchange = Exchange(settings, ledger, clock)
        agents = [InProcessAgent(spec.name, build_agent(spec, expected, seed)) for spec in scenario.agents]
        for agent in agents:
            exchange.handle(agent.peer, Hello(name=agent.name))
        exchange.start()
        drive(exchange, agents, clock, progress)
    return db


def drive(
    exchange: Exchange,
    agents: list[InProcessAgent],
    clock: SimulatedClock,
    progress: Callable[[int], object] | None = None,
    until: Callable[[], bool] | None = None,
    before_tick: Callable[[], object] | None = None,
    next_event: Callable[[], float] | None = None,
) -> None:
    """Tick the exchange until it is finished (or ``until``): every invited agent bids in each round as
    it opens and sees each result (``progress`` is told how many results so far). ``before_tick`` may
    act at the current time (open markets); when nothing can happen the clock jumps to the exchange's
    next deadline, or to ``next_event`` if sooner."""
    done = until or (lambda: exchange.finished)
    seen: dict[str, Market] = {}  # a market's last result comes after the exchange retired it
    results = 0
    while not done():
        if before_tick is not None:
            before_tick()
        for agent in agents:
            exchange.handle(agent.peer, Ping())  # stay live, as a runtime's heartbeat does
        exchange.tick()
        seen.update(exchange.markets)
        broadcasts: list[Message] = [message for message, _ in exchange.drain()]
        for message in broadcasts:
            market_id = getattr(message, "market", None)
            if isinstance(market_id, str) and market_id in seen:
                deliver(exchange, agents, seen[market_id], message)
            if isinstance(message, RoundResult):
                results += 1
                if progress is not None:
                    progress(results)
        if not broadcasts and not exchange.has_due():
            wake = exchange.next_wake() if next_event is None else min(exchange.next_wake(), next_event())
            clock.now = max(clock.now, wake)


def deliver(exchange: Exchange, agents: list[InProcessAgent], market: Market, message: Message) -> None:
    """Agents bid in a round as it opens, and see every result of their markets."""
    invited = [agent for agent in agents if market.invites(agent.name)]
    if isinstance(message, RoundOpen):
        for agent in invited:
            agent.bid(exchange, market, message.round)
    elif isinstance(message, RoundResult):
        for agent in invited:
            agent.observe(exchange, market, message)

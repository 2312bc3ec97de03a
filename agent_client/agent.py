"""What a user implements: an :class:`Agent` whose ``decide`` turns a :class:`RoundContext` into a :class:`Bid`.

``decide`` may be a plain or an ``async`` method. The runtime calls it once per round, off the
network tasks (sync methods run in a worker thread), and gives up at the round's deadline.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from protocol.market_rules import MechanismSettings
from protocol.messages import MarketInfo, RoundResult


@dataclass(frozen=True)
class Bid:
    """A sealed bid: the next-token distribution the agent wants and what it is willing to pay."""

    distribution: Mapping[str, float]
    amount: float


@dataclass(frozen=True)
class RoundContext:
    """What an agent knows when a round of one of its markets opens.

    ``budget``, ``spent`` and ``reserved`` are the agent's across the whole exchange (what its bids
    in other open rounds hold is ``reserved``); ``decisions`` counts the rounds it was asked about
    so far, in every market (budget pacing uses it); ``recent`` holds this market's latest results.
    """

    name: str
    round: int
    prompt: str
    text: str
    tokens: tuple[str, ...]
    budget: float | None
    spent: float
    timeout: float
    recent: tuple[RoundResult, ...] = field(default=())
    market: MarketInfo | None = None
    reserved: float = 0.0
    decisions: int = 0

    @property
    def mechanism(self) -> MechanismSettings | None:
        return self.market.rules if self.market is not None else None

    @property
    def remaining_budget(self) -> float | None:
        return None if self.budget is None else max(self.budget - self.spent - self.reserved, 0.0)

    @property
    def generated(self) -> str:
        """The text after the prompt."""
        return "".join(self.tokens)


DecideResult = Bid | None | Awaitable[Bid | None]


class Agent:
    """Subclass and implement :meth:`decide`; optionally :meth:`observe` to learn from results.

    ``blocking``: whether a sync :meth:`decide` may take long (a model's forward pass, a call to a
    server). The runtime then asks it in a worker thread, so the network tasks never wait for it, and
    abandons it at the round's deadline. An agent whose decision takes microseconds (the built-in
    ones) sets it False and is asked on the runtime's own thread, without a hand-off to a thread and
    back every round; it must then never block.
    """

    blocking: bool = True

    def decide(self, context: RoundContext) -> DecideResult:
        """Return a :class:`Bid`, or ``None`` to sit the round out."""
        raise NotImplementedError

    def observe(self, result: RoundResult, context: RoundContext) -> None:
        """Called with every round's result (own payment in ``result.payments``). Default: nothing."""


class FunctionAgent(Agent):
    """An agent from a callable ``context -> Bid | None`` (sync or async)."""

    def __init__(self, function: Callable[[RoundContext], DecideResult]) -> None:
        self.function = function

    def decide(self, context: RoundContext) -> DecideResult:
        return self.function(context)


def is_async(agent: Agent) -> bool:
    target = agent.function if isinstance(agent, FunctionAgent) else agent.decide
    return inspect.iscoroutinefunction(target)

"""Scenario files: a TOML description of a market (``[market]``) and its agents (``[[agents]]``).

``[market]`` takes every public setting of a market (the same keys as ``auctioneer serve``'s config
file: the mechanism, the reference, the prompt, the timing) plus ``rounds``, the market's length,
which also sets ``max_tokens`` and ``max_idle_rounds``. ``payment`` may be a list: the scenario is
then run once per payment rule and the rules are compared.

With an ``[exchange]`` section the scenario is an ad exchange instead: user queries arrive at a
rate, each opens its own market (``[market]`` gives their settings, the query its prompt and a
length drawn from ``tokens``), and the same agents, each with one budget, bid in all of them.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent_client.scenario import AgentSpec
from auctioneer.mechanism import MechanismConfigError, check_mechanism
from auctioneer.settings import SETTINGS_MODEL, CheckedMechanism, ServeSettings
from protocol.errors import UserError, describe_validation_error
from protocol.fields import AgentName, PositiveFloat
from protocol.market_rules import MarketRules

SET_BY_SCENARIO = {
    "max_tokens": "rounds",
    "max_idle_rounds": "rounds",
    "min_agents": "the [[agents]] list",
}


def market_seed(seed: int) -> str:
    """The market seed (64 hex digits: every round's seed derives from it) of a run's seed."""
    return hashlib.sha256(f"token-auction simulation {seed}".encode()).hexdigest()


class ScenarioError(UserError, ValueError):
    """A scenario that cannot run; the message names the file or the setting."""


class ScenarioMarket(MarketRules, CheckedMechanism):
    """A scenario's ``[market]``: a market's public rules plus its length in ``rounds``."""

    model_config = SETTINGS_MODEL

    rounds: Annotated[int, Field(ge=1)] = Field(20, description="how many rounds the market runs")
    reference_agent: AgentName | None = Field(
        None, description="an agent of the scenario whose bids are the market's reference p_0 (the reader's LM)"
    )
    payment_rules: list[str] = Field(default_factory=list, description="payment rules to compare (from a list)")

    @model_validator(mode="before")
    @classmethod
    def _payment_list(cls, data: Any) -> Any:
        """``payment = ["first_price", "second_price"]`` runs the scenario once per rule."""
        if isinstance(data, dict) and isinstance(data.get("payment"), list):
            rules = data["payment"]
            return {**data, "payment": rules[0] if rules else "", "payment_rules": rules}
        return data

    @model_validator(mode="after")
    def _checked(self) -> ScenarioMarket:
        for name, source in SET_BY_SCENARIO.items():
            if name in self.model_fields_set:
                raise ValueError(f"{name} is set by {source} in a scenario")
        for rule in self.payment_rules:
            try:
                check_mechanism(self.model_copy(update={"payment": rule}))
            except MechanismConfigError as exc:
                raise ValueError(str(exc)) from None
        return self


class QueryPlan(BaseModel):
    """How queries arrive at an exchange: each opens a market continuing its prompt."""

    model_config = ConfigDict(extra="forbid")

    queries: list[str] = Field(min_length=1, description="the prompts of the queries, cycled")
    rate: PositiveFloat = Field(2.0, description="queries per second (Poisson arrivals)")
    count: Annotated[int, Field(ge=1)] = Field(20, description="how many queries arrive")
    tokens: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = Field(
        (8, 16), description="each query's market writes between these many tokens"
    )

    @model_validator(mode="after")
    def _ordered(self) -> QueryPlan:
        if self.tokens[0] > self.tokens[1]:
            raise ValueError("tokens must be [low, high] with low <= high")
        return self

    def arrivals(self, seed: int) -> list[Arrival]:
        """When each query arrives (seconds after the start), its prompt and its length."""
        rng = random.Random(seed)
        clock, plan = 0.0, []
        for k in range(self.count):
            clock += rng.expovariate(self.rate)
            plan.append(Arrival(f"q{k:04d}", clock, self.queries[k % len(self.queries)], rng.randint(*self.tokens)))
        return plan


@dataclass(frozen=True)
class Arrival:
    market: str
    at: float
    prompt: str
    tokens: int


class QualitySpec(BaseModel):
    """``[quality]``: the reader's language model, which scores the market's text against its own
    continuation of the prompt (:mod:`simulation.quality`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="the reader's model (smollm2, a .gguf file, a hub name or directory)")
    instruction: str = Field("", description="the reader's framing of the text (none: the model's own)")
    top_k: Annotated[int, Field(ge=1)] | None = Field(50, description="the baseline writer's top-k, as an agent's")
    seed: int = Field(0, description="the seed of the baseline's draws")


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    market: ScenarioMarket = Field(default_factory=ScenarioMarket)
    exchange: QueryPlan | None = None
    agents: list[AgentSpec]
    quality: QualitySpec | None = None

    @model_validator(mode="after")
    def _distinct_names(self) -> Scenario:
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ValueError("agent names must be distinct")
        if not names:
            raise ValueError("a scenario needs at least one agent")
        if self.market.reference_agent is not None and self.market.reference_agent not in names:
            raise ValueError(f"the reference agent {self.market.reference_agent!r} is not one of the [[agents]]")
        if self.market.reference_agent is not None and self.exchange is not None:
            raise ValueError("a reference agent is for a market scenario, not an [exchange]")
        return self

    @classmethod
    def from_document(cls, document: dict[str, Any], origin: Path) -> Scenario:
        """The scenario a parsed TOML document describes; :class:`ScenarioError` names what is wrong."""
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            raise ScenarioError(f"scenario {origin}: {describe_validation_error(exc)}") from None

    def expected_rounds(self) -> int:
        """How many rounds an agent should expect in the whole scenario (budget pacing spreads over them)."""
        if self.exchange is None:
            return self.market.rounds
        return int(self.exchange.count * sum(self.exchange.tokens) / 2)

    def payments(self) -> list[str]:
        """The payment rules to run: the list given, or the one rule."""
        return self.market.payment_rules or [self.market.payment]

    def with_payment(self, payment: str) -> Scenario:
        return self.model_copy(update={"market": self.market.model_copy(update={"payment": payment})})

    def settings(self, db: Path, seed: int, rounds: int | None = None, **process: Any) -> ServeSettings:
        """The auctioneer's settings for this scenario (its current payment rule) and a run's ``seed``, with
        ``process`` settings. A market scenario's market opens at start; an exchange starts empty and stays."""
        length = rounds or self.market.rounds
        rules = self.market.model_dump(exclude={"rounds", "payment_rules", "reference_agent"})
        if self.exchange is not None:
            rules.pop("prompt")
            process = {"stay": True, **process}
        elif self.market.reference_agent is not None:  # opened at start as a market of its own, with it
            opened = {"id": "market", "reference_agent": self.market.reference_agent, "prompt": rules.pop("prompt")}
            process = {"markets": [opened], **process}
        try:
            return ServeSettings.model_validate(
                {
                    **rules,
                    "db": db,
                    "seed": market_seed(seed),
                    "max_tokens": length,
                    "max_idle_rounds": length if self.exchange is None else 3,
                    "min_agents": len(self.agents),
                    "budgets": {a.name: a.budget for a in self.agents if a.budget is not None},
                    **process,
                }
            )
        except ValidationError as exc:
            raise ScenarioError(f"scenario [market] {describe_validation_error(exc)}") from None

    def agent(self, name: str) -> AgentSpec:
        for spec in self.agents:
            if spec.name == name:
                return spec
        raise ScenarioError(
            f"the scenario has no agent named {name!r} (it has {', '.join(a.name for a in self.agents)})"
        )

"""Agents described as data (a scenario file's ``[[agents]]`` entries) and built into :class:`Agent` objects.

Used by ``agent-client --scenario FILE --name NAME`` and by ``auctioneer simulate`` (through the
scenario model of ``simulation.scenario``), so an agent behaves the same in a networked and an
in-process simulation.
"""

from __future__ import annotations

import zlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent_client.agent import Agent
from agent_client.builtin import PhraseAgent, StaticAgent
from agent_client.loading import AgentLoadError, load_agent
from agent_client.strategies import STRATEGIES, BudgetPaced, Fixed, StrategicAgent
from protocol.fields import AgentName, NonNegativeFloat

BUILTIN_TYPES = ("static", "phrase")


class AgentSpec(BaseModel):
    """One agent of a scenario: what it wants (``type`` and ``params``) and how it bids."""

    model_config = ConfigDict(extra="forbid")

    name: AgentName
    type: str = "static"
    params: dict[str, Any] = Field(default_factory=dict)
    budget: NonNegativeFloat | None = None
    value: NonNegativeFloat = 1.0
    strategy: str | None = None
    strategy_params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in BUILTIN_TYPES and ":" not in value:
            raise ValueError(f"agent type must be one of {', '.join(BUILTIN_TYPES)} or package.module:Class")
        return value

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str | None) -> str | None:
        if value is not None and value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; choose one of {', '.join(STRATEGIES)}")
        return value


def build_agent(spec: AgentSpec, expected_rounds: int, seed: int = 0) -> Agent:
    """The agent a spec describes; raises ``AgentLoadError`` with a fixable message."""
    params = dict(spec.params)
    try:
        if spec.type == "static":
            inner: Agent = StaticAgent(params.pop("distribution"), params.pop("bid", spec.value), **params)
        elif spec.type == "phrase":
            inner = PhraseAgent(params.pop("phrase"), params.pop("bid", spec.value), **params)
        else:
            inner = load_agent(spec.type, params)
    except KeyError as exc:
        raise AgentLoadError(f"agent {spec.name}: missing parameter {exc}") from None
    except (TypeError, ValueError) as exc:
        raise AgentLoadError(f"agent {spec.name}: {exc}") from None
    if spec.strategy is None:
        return inner
    return StrategicAgent(inner, build_strategy(spec, expected_rounds, seed), spec.value)


def build_strategy(spec: AgentSpec, expected_rounds: int, seed: int) -> Any:
    kind = STRATEGIES[spec.strategy or "fixed"]
    params = dict(spec.strategy_params)
    try:
        if kind is Fixed:
            return Fixed(params.get("amount", spec.value))
        if kind is BudgetPaced:
            if spec.budget is None:
                raise AgentLoadError(f"agent {spec.name}: budget_paced needs a budget")
            params.setdefault("expected_rounds", expected_rounds)
            return BudgetPaced(spec.value, spec.budget, **params)
        if spec.strategy == "learning":
            params.setdefault("seed", seed ^ zlib.crc32(spec.name.encode()))
        return kind(spec.value, **params)  # type: ignore[call-arg]
    except TypeError as exc:
        raise AgentLoadError(f"agent {spec.name}: strategy {spec.strategy}: {exc}") from None

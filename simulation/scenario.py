"""Scenario files: a TOML description of a market (``[market]``) and its agents (``[[agents]]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent_client.scenario import AgentSpec
from auctioneer.settings import MarketSettings
from protocol.cli import UsageError, describe_validation_error, read_toml


class MarketSpec(BaseModel):
    """The market of a scenario; keys as in ``auctioneer serve``'s config file."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = ""
    rounds: Annotated[int, Field(ge=1)] = 20
    aggregation: str = "linear"
    payment: str | list[str] = "first_price"  # a list runs the scenario once per payment rule
    mode: str = "sample"
    temperature: Annotated[float, Field(gt=0)] = 1.0
    reference: dict[str, float] | None = None
    reference_weight: Annotated[float, Field(ge=0)] = 0.0
    stop_token: str | None = None
    round_timeout: Annotated[float, Field(gt=0)] = 2.0


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    market: MarketSpec = Field(default_factory=MarketSpec)
    agents: list[AgentSpec]

    @model_validator(mode="after")
    def _distinct_names(self) -> Scenario:
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ValueError("agent names must be distinct")
        if not names:
            raise ValueError("a scenario needs at least one agent")
        return self

    def payment_rules(self) -> list[str]:
        payment = self.market.payment
        return [payment] if isinstance(payment, str) else list(payment)

    def with_payment(self, payment: str) -> Scenario:
        return self.model_copy(update={"market": self.market.model_copy(update={"payment": payment})})

    def settings(self, db: Path, seed: str, rounds: int | None = None, **network: Any) -> MarketSettings:
        """The auctioneer's settings for this scenario (a single payment rule)."""
        market = self.market
        try:
            return MarketSettings(
                db=db,
                prompt=market.prompt,
                max_tokens=rounds or market.rounds,
                stop_token=market.stop_token,
                round_timeout=market.round_timeout,
                min_agents=len(self.agents),
                max_idle_rounds=rounds or market.rounds,
                aggregation=market.aggregation,
                payment=self.payment_rules()[0],
                mode=market.mode,
                temperature=market.temperature,
                reference=market.reference,
                reference_weight=market.reference_weight,
                seed=seed,
                budgets={a.name: a.budget for a in self.agents if a.budget is not None},
                **network,
            )
        except ValidationError as exc:
            raise UsageError(f"scenario [market] {describe_validation_error(exc)}") from None

    def agent(self, name: str) -> AgentSpec:
        for spec in self.agents:
            if spec.name == name:
                return spec
        raise UsageError(f"the scenario has no agent named {name!r} (it has {', '.join(a.name for a in self.agents)})")


def load_scenario(path: Path) -> Scenario:
    data = read_toml(path, "scenario")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"scenario {path}: {describe_validation_error(exc)}") from None

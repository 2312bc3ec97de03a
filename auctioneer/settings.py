"""Market settings: one validated model, filled from a TOML file and command-line flags (flags win).

The mechanism-defining part (prompt, rules, reference) is stored in the ledger when a market is
created; restarting on the same database must not change it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from auctioneer.mechanism import MechanismConfig, MechanismConfigError, Reference, SparseDistribution
from auctioneer.mechanism.auction import DEFAULT_EPS
from protocol.cli import UsageError, describe_validation_error, read_toml
from protocol.codec import DEFAULT_MAX_MESSAGE_BYTES
from protocol.distribution import DEFAULT_MAX_SUPPORT, Distribution

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class MarketSettings(BaseModel):
    """Everything ``auctioneer serve`` needs to run a market."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    market: str = "tcp://127.0.0.1:5555"
    feed: str = "tcp://127.0.0.1:5556"
    db: Path = Path("market.db")
    prompt: str = ""
    max_tokens: Annotated[int, Field(ge=1)] = 32
    stop_token: str | None = None
    round_timeout: Positive = 2.0
    round_pause: NonNegative = 0.0
    min_agents: Annotated[int, Field(ge=0)] = 1
    max_idle_rounds: Annotated[int, Field(ge=1)] = 3
    aggregation: str = "linear"
    payment: str = "first_price"
    mode: str = "sample"
    temperature: Positive = 1.0
    eps: Annotated[float, Field(gt=0, lt=1)] = DEFAULT_EPS
    reference: dict[str, float] | None = None
    reference_weight: NonNegative = 0.0
    seed: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    heartbeat_interval: Positive = 1.0
    max_bid: Positive = 1e9
    max_support: Annotated[int, Field(ge=1)] = DEFAULT_MAX_SUPPORT
    max_message_bytes: Annotated[int, Field(ge=1024)] = DEFAULT_MAX_MESSAGE_BYTES
    budget: NonNegative | None = None
    budgets: dict[str, NonNegative] = Field(default_factory=dict)
    curve_secret: Path | None = None
    authorized_keys: Path | None = None

    @field_validator("reference")
    @classmethod
    def _valid_reference(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None:
            Distribution.from_mapping(value, max_support=max(len(value), 1))
        return value

    @model_validator(mode="after")
    def _valid_mechanism(self) -> MarketSettings:
        try:
            self.mechanism()
        except MechanismConfigError as exc:
            raise ValueError(str(exc)) from None
        if (self.curve_secret is None) != (self.authorized_keys is None):
            raise ValueError("CurveZMQ needs both curve_secret and authorized_keys")
        return self

    def mechanism(self) -> MechanismConfig:
        return MechanismConfig(self.aggregation, self.payment, self.mode, self.temperature, self.eps)

    def reference_distribution(self) -> Reference | None:
        if self.reference is None:
            return None
        return Reference(SparseDistribution.from_mapping(self.reference), self.reference_weight)

    def budget_of(self, agent: str) -> float | None:
        return self.budgets.get(agent, self.budget)

    def market_definition(self) -> dict[str, Any]:
        """The settings that define the market itself; fixed once the ledger holds a round."""
        return self.model_dump(
            mode="json",
            include={
                "prompt",
                "aggregation",
                "payment",
                "mode",
                "temperature",
                "eps",
                "reference",
                "reference_weight",
                "seed",
            },
        )


def load_settings(config_file: Path | None, overrides: dict[str, Any]) -> MarketSettings:
    """Settings from ``config_file`` (TOML, same keys as the flags) with non-None ``overrides`` on top."""
    values = read_toml(config_file, "config") if config_file is not None else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return MarketSettings.model_validate(values)
    except ValidationError as exc:
        raise UsageError(f"setting {describe_validation_error(exc)}") from None

"""The auctioneer's settings, derived from the protocol's one declaration of a market (``MarketRules``).

- :class:`CheckedMechanism`: the mechanism settings, with every rule name checked against the
  mechanism's registries;
- :class:`MarketSettings`: a market's public rules plus its private ``seed``;
- :class:`ServeSettings`: what one ``auctioneer serve`` process needs on top: endpoints, ledger,
  liveness, request limits, budgets, CurveZMQ.

Keys are the field names everywhere (TOML config, scenario ``[market]``, ``evaluate`` input); the
command-line flags are generated from the fields. The part that defines a market
(:meth:`MarketSettings.definition`) is stored in the ledger when the market is created and may not
change on restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError, model_validator

from auctioneer.mechanism import MechanismConfigError, Reference, SparseDistribution, check_mechanism
from protocol.codec import LIMITS
from protocol.errors import describe_validation_error
from protocol.fields import NonNegativeFloat, PositiveFloat, SeedHex
from protocol.market_rules import MarketRules, MechanismSettings

SETTINGS_MODEL = ConfigDict(extra="forbid", strict=False, frozen=True)


class SettingsError(ValueError):
    """Settings that cannot run; the message names the setting and says what is wrong."""


class CheckedMechanism(MechanismSettings):
    """Mechanism settings whose rules exist in this auctioneer's registries."""

    model_config = SETTINGS_MODEL

    @model_validator(mode="after")
    def _registered_rules(self) -> CheckedMechanism:
        try:
            check_mechanism(self)
        except MechanismConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def mechanism(self) -> MechanismSettings:
        """Just the mechanism settings, as the protocol states them to agents."""
        return MechanismSettings.model_validate(self.model_dump(include=set(MechanismSettings.model_fields)))


class MarketSettings(MarketRules, CheckedMechanism):
    """One market: its public rules and its private seed."""

    model_config = SETTINGS_MODEL

    seed: SeedHex | None = Field(None, description="64 hex chars; derives every round's seed (reproducible markets)")

    def reference_distribution(self) -> Reference | None:
        if self.reference is None:
            return None
        return Reference(SparseDistribution.from_mapping(self.reference), self.reference_weight)

    def definition(self) -> dict[str, Any]:
        """The settings that define the market itself: fixed once the ledger holds the market."""
        defining = {*MechanismSettings.model_fields, "prompt", "reference", "reference_weight", "seed"}
        return self.model_dump(mode="json", include=defining)


class ServeSettings(MarketSettings):
    """Everything ``auctioneer serve`` needs to run a market."""

    model_config = SETTINGS_MODEL

    market: str = Field("tcp://127.0.0.1:5555", description="ROUTER endpoint to bind (requests)")
    feed: str = Field("tcp://127.0.0.1:5556", description="PUB endpoint to bind (broadcasts)")
    db: Path = Field(Path("market.db"), description="SQLite ledger; reusing it resumes the market")
    heartbeat_interval: PositiveFloat = Field(
        1.0, description="seconds between heartbeats", json_schema_extra={"flag": "--heartbeat"}
    )
    max_message_bytes: Annotated[int, Field(ge=1024)] = Field(
        LIMITS.requests.max_message_bytes, description="largest request frame accepted"
    )
    budget: NonNegativeFloat | None = Field(None, description="default budget per agent (none: unlimited)")
    budgets: dict[str, NonNegativeFloat] = Field(default_factory=dict, description="budget per agent name")
    curve_secret: Path | None = Field(None, description="the server's secret key file (turns CurveZMQ on)")
    authorized_keys: Path | None = Field(None, description="directory of the agents' public NAME.key files")

    @model_validator(mode="after")
    def _curve_needs_both_keys(self) -> ServeSettings:
        if (self.curve_secret is None) != (self.authorized_keys is None):
            raise ValueError("CurveZMQ needs both curve_secret and authorized_keys")
        return self

    def budget_of(self, agent: str) -> float | None:
        return self.budgets.get(agent, self.budget)


def load_settings(values: Mapping[str, Any], overrides: Mapping[str, Any]) -> ServeSettings:
    """Settings from ``values`` (a config file's keys) with the non-None ``overrides`` (flags) on top."""
    merged = {**values, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return ServeSettings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(f"setting {describe_validation_error(exc)}") from None

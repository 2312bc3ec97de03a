"""What defines a market, as the protocol states it: the mechanism and the market's rules.

This is the one declaration of these settings. Agents receive :class:`MechanismSettings` in
``welcome`` (they need it to verify every result); the auctioneer's configuration, its command-line
flags, ``auctioneer evaluate``'s input and scenario files all derive from these models (the
auctioneer adds its own checks of the rule names against its registries, and its private fields).
A field's ``description`` is its help text everywhere.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocol.distribution import DEFAULT_MAX_SUPPORT, Distribution
from protocol.fields import NonNegativeFloat, PositiveFloat, UnitInterval

DEFAULT_EPS = 1e-6
DEFAULT_MAX_ROUND_TOKENS = 65_536
WIRE_MODEL = ConfigDict(strict=True, frozen=True, extra="ignore")


class MechanismSettings(BaseModel):
    """How a round is decided (docs/mechanism.md). Rule names are looked up by the auctioneer."""

    model_config = WIRE_MODEL

    aggregation: str = Field("linear", description="how the bid-weighted distributions combine")
    payment: str = Field("first_price", description="what each bidder is charged")
    mode: str = Field("sample", description="how the token is drawn from the aggregate")
    temperature: PositiveFloat = Field(1.0, description="the draw uses q^(1/T); payments use q")
    eps: UnitInterval = Field(DEFAULT_EPS, description="smoothing of log_linear: (1-eps) p + eps/|V|")


class ReferenceSettings(BaseModel):
    """The operator's reference distribution ``p_0``: aggregated with weight ``b_0``, never charged."""

    model_config = WIRE_MODEL

    reference: dict[str, float] | None = Field(None, description="the reference distribution p_0 (token: prob)")
    reference_weight: NonNegativeFloat = Field(0.0, description="weight b_0 of the reference (a reserve when > 0)")

    @field_validator("reference")
    @classmethod
    def _valid_reference(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None:
            Distribution.from_mapping(value, max_support=max(len(value), 1))
        return value

    @property
    def effective_reference_weight(self) -> float:
        """``b_0`` as the mechanism uses it: 0 without a reference distribution."""
        return self.reference_weight if self.reference is not None else 0.0


class MarketRules(ReferenceSettings, MechanismSettings):
    """A market's mechanism, reference and rules: everything public about how it runs."""

    prompt: str = Field("", description="the text every round continues")
    max_tokens: Annotated[int, Field(ge=1)] = Field(32, description="the market ends after this many tokens")
    stop_token: str | None = Field(None, description="the market ends when this token is chosen")
    round_timeout: PositiveFloat = Field(2.0, description="seconds a round collects bids")
    round_pause: NonNegativeFloat = Field(0.0, description="seconds between a result and the next round")
    min_agents: Annotated[int, Field(ge=0)] = Field(1, description="agents needed before round 1")
    max_idle_rounds: Annotated[int, Field(ge=1)] = Field(3, description="the market ends after N rounds without bids")
    max_bid: PositiveFloat = Field(1e9, description="the largest bid accepted")
    max_support: Annotated[int, Field(ge=1)] = Field(
        DEFAULT_MAX_SUPPORT, description="the most tokens a bid's distribution may list"
    )
    max_round_tokens: Annotated[int, Field(ge=1)] = Field(
        DEFAULT_MAX_ROUND_TOKENS, description="the most distinct tokens a round's bids may bring (bounds its result)"
    )

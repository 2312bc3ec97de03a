"""What-if analysis: one round, or a batch, described as JSON and run straight through the mechanism.

A round is the mechanism settings and reference of the protocol's declaration (same keys as a
market's config), an optional ``seed`` and the sealed ``bids``. ``reference`` may also be given
as ``{"distribution": {...}, "weight": w}``.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from auctioneer.mechanism import AuctionOutcome, Reference, SparseDistribution, run_auction
from auctioneer.settings import CheckedMechanism
from protocol.distribution import Distribution
from protocol.draw import SEED_BYTES
from protocol.errors import UserError, describe_validation_error
from protocol.fields import AgentName, NonNegativeFloat, SeedHex
from protocol.market_rules import ReferenceSettings


class RoundInputError(UserError, ValueError):
    """The input describes no valid round; the message names the field."""


class BidInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: AgentName
    bid: NonNegativeFloat
    distribution: dict[str, float]

    @field_validator("distribution")
    @classmethod
    def _valid_distribution(cls, value: dict[str, float]) -> dict[str, float]:
        Distribution.from_mapping(value, max_support=max(len(value), 1))
        return value


class RoundInput(CheckedMechanism, ReferenceSettings):
    """One round to evaluate: mechanism settings, reference, seed and the sealed bids."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    seed: SeedHex | None = Field(None, description="the round's seed (default: a fresh random one)")
    bids: list[BidInput]

    @model_validator(mode="before")
    @classmethod
    def _nested_reference(cls, data: Any) -> Any:
        """Accept ``reference: {distribution, weight}`` as well as ``reference`` + ``reference_weight``."""
        if isinstance(data, dict) and isinstance(data.get("reference"), dict) and "distribution" in data["reference"]:
            nested = data["reference"]
            return {**data, "reference": nested["distribution"], "reference_weight": nested.get("weight", 0.0)}
        return data

    @model_validator(mode="after")
    def _distinct_agents(self) -> RoundInput:
        names = [bid.agent for bid in self.bids]
        if len(set(names)) != len(names):
            raise ValueError("each agent may bid at most once per round")
        if not self.bids and self.reference is None:
            raise ValueError("a round needs at least one bid or a reference distribution")
        return self


def evaluate_round(spec: RoundInput) -> dict[str, Any]:
    """Run the mechanism on one round and describe the outcome as JSON-ready data."""
    seed = bytes.fromhex(spec.seed) if spec.seed else secrets.token_bytes(SEED_BYTES)
    reference = None
    if spec.reference is not None:
        reference = Reference(SparseDistribution.from_mapping(spec.reference), spec.reference_weight)
    outcome = run_auction(
        [SparseDistribution.from_mapping(b.distribution) for b in spec.bids],
        [b.bid for b in spec.bids],
        spec,
        seed,
        reference,
    )
    return describe_outcome(outcome, [b.agent for b in spec.bids])


def describe_outcome(outcome: AuctionOutcome, agents: list[str]) -> dict[str, Any]:
    return {
        "distribution": outcome.distribution_mapping(),
        "token": outcome.token,
        "payments": dict(zip(agents, outcome.payments.tolist(), strict=True)),
        "allocations": dict(zip(agents, outcome.allocations.tolist(), strict=True)),
        "sponsors": outcome.sponsors_by_name(agents),
        "seed": outcome.seed.hex(),
        "seed_commitment": outcome.seed_commitment,
    }


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_rounds(text: str) -> tuple[list[RoundInput], bool]:
    """Parse the input document: ``(rounds, was_a_list)``; :class:`RoundInputError` names the bad field."""
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise RoundInputError(f"input is not valid JSON: {exc}") from None
    is_batch = isinstance(document, list)
    items = document if is_batch else [document]
    rounds = []
    for index, item in enumerate(items):
        try:
            rounds.append(RoundInput.model_validate(item))
        except ValidationError as exc:
            where = f"[{index}]." if is_batch else ""
            raise RoundInputError(f"{where}{describe_validation_error(exc)}") from None
    return rounds, is_batch

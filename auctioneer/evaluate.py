"""``auctioneer evaluate``: what-if analysis of one round or a batch, straight through the mechanism.

Input is a JSON object (or a list of them) describing a round; output is the outcome as JSON. The
request models here are also how other parts of the project describe a round in JSON (tests,
scenario files).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from auctioneer.mechanism import (
    AGGREGATIONS,
    PAYMENTS,
    SEED_BYTES,
    SELECTION_MODES,
    AuctionOutcome,
    MechanismConfig,
    Reference,
    SparseDistribution,
    run_auction,
)
from auctioneer.mechanism.auction import DEFAULT_EPS
from protocol.cli import UsageError, describe_validation_error
from protocol.distribution import Distribution

NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _checked_distribution(mapping: dict[str, float]) -> dict[str, float]:
    Distribution.from_mapping(mapping, max_support=max(len(mapping), 1))
    return mapping


def _one_of(value: str, known: dict[str, Any], kind: str) -> str:
    if value not in known:
        raise ValueError(f"unknown {kind} {value!r}; choose one of {', '.join(sorted(known))}")
    return value


class BidSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str
    bid: NonNegative
    distribution: dict[str, float]

    _check_distribution = field_validator("distribution")(_checked_distribution)


class ReferenceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    distribution: dict[str, float]
    weight: NonNegative = 0.0

    _check_distribution = field_validator("distribution")(_checked_distribution)


class RoundSpec(BaseModel):
    """One round to evaluate: the mechanism settings and the sealed bids."""

    model_config = ConfigDict(extra="forbid")

    aggregation: str = "linear"
    payment: str = "first_price"
    mode: str = "sample"
    temperature: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    eps: Annotated[float, Field(gt=0, lt=1)] = DEFAULT_EPS
    seed: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    reference: ReferenceSpec | None = None
    bids: list[BidSpec]

    @field_validator("aggregation")
    @classmethod
    def _aggregation(cls, value: str) -> str:
        return _one_of(value, dict(AGGREGATIONS), "aggregation")

    @field_validator("payment")
    @classmethod
    def _payment(cls, value: str) -> str:
        return _one_of(value, dict(PAYMENTS), "payment")

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        return _one_of(value, dict(SELECTION_MODES), "mode")

    @model_validator(mode="after")
    def _distinct_agents(self) -> RoundSpec:
        names = [bid.agent for bid in self.bids]
        if len(set(names)) != len(names):
            raise ValueError("each agent may bid at most once per round")
        if not self.bids and self.reference is None:
            raise ValueError("a round needs at least one bid or a reference distribution")
        return self

    def config(self) -> MechanismConfig:
        return MechanismConfig(self.aggregation, self.payment, self.mode, self.temperature, self.eps)


def evaluate_round(spec: RoundSpec) -> dict[str, Any]:
    """Run the mechanism on one round spec and describe the outcome as JSON-ready data."""
    seed = bytes.fromhex(spec.seed) if spec.seed else secrets.token_bytes(SEED_BYTES)
    reference = None
    if spec.reference is not None:
        reference = Reference(SparseDistribution.from_mapping(spec.reference.distribution), spec.reference.weight)
    outcome = run_auction(
        [SparseDistribution.from_mapping(b.distribution) for b in spec.bids],
        [b.bid for b in spec.bids],
        spec.config(),
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
        "seed": outcome.seed.hex(),
        "seed_commitment": outcome.seed_commitment,
    }


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_rounds(text: str) -> tuple[list[RoundSpec], bool]:
    """Parse the input document: ``(rounds, was_a_list)``; :class:`UsageError` names the bad field."""
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise UsageError(f"input is not valid JSON: {exc}") from None
    is_batch = isinstance(document, list)
    items = document if is_batch else [document]
    rounds = []
    for index, item in enumerate(items):
        try:
            rounds.append(RoundSpec.model_validate(item))
        except ValidationError as exc:
            where = f"[{index}]." if is_batch else ""
            raise UsageError(f"{where}{describe_validation_error(exc)}") from None
    return rounds, is_batch


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "evaluate", help="run the mechanism on rounds given as JSON (no network)", description=__doc__
    )
    parser.add_argument("file", nargs="?", default="-", help="JSON file with a round or a list of rounds; - for stdin")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.file == "-":
        text = sys.stdin.read()
    else:
        try:
            with open(args.file, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    rounds, is_batch = parse_rounds(text)
    results = [evaluate_round(spec) for spec in rounds]
    json.dump(results if is_batch else results[0], sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")
    return 0

"""Every message of the wire protocol as a pydantic model (see SPEC.md, which is normative).

A message is one msgpack map: ``v`` (protocol version), ``type`` (which model), an optional
request ``id`` that the reply echoes as ``re``, and the type's own fields. Models are strict (no
string-to-number coercion) and ignore unknown fields, so newer peers can add fields freely.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocol.distribution import Distribution
from protocol.errors import ErrorCode
from protocol.fields import AgentName, Count, HexDigest, RequestId, RoundNumber, Seq
from protocol.market_rules import MechanismSettings

PROTOCOL_VERSION = 1


class Message(BaseModel):
    """Fields common to every message. ``field_codes`` maps a field to the error code its
    validation failures are reported with (anything else is ``MALFORMED``)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore", arbitrary_types_allowed=True)
    field_codes: ClassVar[dict[str, ErrorCode]] = {}

    type: str
    id: RequestId | None = None
    re: RequestId | None = None


class OutcomeDistribution(Distribution):
    """The aggregated distribution of a round: any support size, same other rules."""

    @classmethod
    def from_arrays(cls, tokens: list[str], probs: np.ndarray) -> OutcomeDistribution:
        return cls.model_validate({"tokens": tokens, "probs": probs}, context={"max_support": len(tokens)})

    def support_limit(self, context: dict[str, Any]) -> int:
        return len(self.tokens)


# --- market socket: agent -> auctioneer -------------------------------------------------------


class Hello(Message):
    type: Literal["hello"] = "hello"
    name: AgentName
    client: Annotated[str, Field(max_length=128)] = ""


class SealedBid(Message):
    field_codes: ClassVar[dict[str, ErrorCode]] = {
        "distribution": ErrorCode.INVALID_DISTRIBUTION,
        "bid": ErrorCode.INVALID_BID,
    }

    type: Literal["sealed_bid"] = "sealed_bid"
    round: RoundNumber
    distribution: Distribution
    bid: float

    @field_validator("bid")
    @classmethod
    def _finite_non_negative(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"bid must be a finite number >= 0, got {value}")
        return value


def seal_bid(round_number: int, distribution: Mapping[str, float], amount: float, max_support: int) -> SealedBid:
    """The ``sealed_bid`` for a distribution given as ``{token: probability}``, validated once against
    ``max_support``; ``ValidationError`` (a ``ValueError``) names what is wrong."""
    return SealedBid.model_validate(
        {
            "round": round_number,
            "distribution": {"tokens": list(distribution), "probs": list(distribution.values())},
            "bid": amount,
        },
        strict=False,
        context={"max_support": max_support},
    )


class SyncRequest(Message):
    type: Literal["sync_request"] = "sync_request"
    since_seq: Seq = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 256


class Ping(Message):
    type: Literal["ping"] = "ping"


# --- market socket: auctioneer -> agent -------------------------------------------------------


class Welcome(Message):
    type: Literal["welcome"] = "welcome"
    name: AgentName
    market: str
    prompt: str
    seq: Seq
    round: Count
    mechanism: MechanismSettings
    budget: float | None = None
    spent: float = 0.0
    max_bid: float
    max_support: int
    heartbeat_interval: float
    reference_weight: float = 0.0


class BidAccepted(Message):
    type: Literal["bid_accepted"] = "bid_accepted"
    round: RoundNumber


class Error(Message):
    type: Literal["error"] = "error"
    code: str
    message: str
    field: str | None = None


class Pong(Message):
    type: Literal["pong"] = "pong"
    seq: Seq


# --- feed socket: broadcasts, each with a strictly increasing seq ------------------------------


class RoundOpen(Message):
    type: Literal["round_open"] = "round_open"
    seq: Seq
    round: RoundNumber
    text: str
    seed_commitment: HexDigest
    deadline: float
    timeout: float


class RoundResult(Message):
    type: Literal["round_result"] = "round_result"
    seq: Seq
    round: RoundNumber
    token: str | None
    text: str
    distribution: OutcomeDistribution | None
    bids: dict[str, float]
    payments: dict[str, float]
    balances: dict[str, float]
    seed: HexDigest
    seed_commitment: HexDigest
    sponsors: dict[str, float] = {}


class MarketClosed(Message):
    type: Literal["market_closed"] = "market_closed"
    seq: Seq
    reason: str
    text: str
    rounds: Count


class Heartbeat(Message):
    """Carries the latest seq without taking a new one, so a subscriber can spot a gap."""

    type: Literal["heartbeat"] = "heartbeat"
    seq: Seq
    round: Count
    time: float


class SyncReply(Message):
    """Clone-pattern snapshot (prompt, text, tokens, balances, open round) plus missed results."""

    type: Literal["sync_reply"] = "sync_reply"
    seq: Seq
    last_round: Count
    prompt: str
    text: str
    tokens: list[str]
    balances: dict[str, float]
    results: list[RoundResult]
    open_round: RoundOpen | None = None
    closed: MarketClosed | None = None
    more: bool = False


MESSAGE_TYPES: dict[str, type[Message]] = {
    model.model_fields["type"].default: model
    for model in (
        Hello,
        SealedBid,
        SyncRequest,
        Ping,
        Welcome,
        BidAccepted,
        Error,
        Pong,
        RoundOpen,
        RoundResult,
        MarketClosed,
        Heartbeat,
        SyncReply,
    )
}

# What each side receives on the market socket.
AGENT_REQUESTS = frozenset({"hello", "sealed_bid", "sync_request", "ping"})

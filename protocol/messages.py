"""Every message of the wire protocol as a pydantic model (see SPEC.md, which is normative).

A message is one msgpack map: ``v`` (protocol version), ``type`` (which model), an optional
request ``id`` that the reply echoes as ``re``, and the type's own fields. Models are strict (no
string-to-number coercion) and ignore unknown fields, so newer peers can add fields freely.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocol.distribution import Distribution
from protocol.errors import ErrorCode

PROTOCOL_VERSION = 1

AgentName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
RequestId = Annotated[int, Field(ge=0, lt=2**63)]
RoundNumber = Annotated[int, Field(ge=1, lt=2**63)]
Seq = Annotated[int, Field(ge=0, lt=2**63)]
HexDigest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


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


class SyncRequest(Message):
    type: Literal["sync_request"] = "sync_request"
    since_seq: Seq = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 256


class Ping(Message):
    type: Literal["ping"] = "ping"


# --- market socket: auctioneer -> agent -------------------------------------------------------


class MechanismInfo(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    aggregation: str
    payment: str
    mode: str
    temperature: float


class Welcome(Message):
    type: Literal["welcome"] = "welcome"
    name: AgentName
    market: str
    prompt: str
    seq: Seq
    round: Annotated[int, Field(ge=0)]
    mechanism: MechanismInfo
    budget: float | None = None
    spent: float = 0.0
    max_bid: float
    max_support: int
    heartbeat_interval: float


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
    seed: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    seed_commitment: HexDigest


class MarketClosed(Message):
    type: Literal["market_closed"] = "market_closed"
    seq: Seq
    reason: str
    text: str
    rounds: Annotated[int, Field(ge=0)]


class Heartbeat(Message):
    """Carries the latest seq without taking a new one, so a subscriber can spot a gap."""

    type: Literal["heartbeat"] = "heartbeat"
    seq: Seq
    round: Annotated[int, Field(ge=0)]
    time: float


FeedMessage = RoundOpen | RoundResult | MarketClosed


class SyncReply(Message):
    """Clone-pattern snapshot (prompt, text, tokens, balances, open round) plus missed results."""

    type: Literal["sync_reply"] = "sync_reply"
    seq: Seq
    last_round: Annotated[int, Field(ge=0)]
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

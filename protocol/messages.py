"""Every message of the wire protocol as a pydantic model (see SPEC.md, which is normative).

A message is one msgpack map: ``v`` (protocol version), ``type`` (which model), an optional
request ``id`` that the reply echoes as ``re``, and the type's own fields. Models are strict (no
string-to-number coercion) and ignore unknown fields, so newer peers can add fields freely.

An auctioneer is an exchange of markets. Every market-scoped message carries the ``market`` id;
a request that names none is for the exchange's default market (the one ``serve --prompt`` opens),
which is how a client of revision 1.2 keeps working.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocol.distribution import Distribution
from protocol.errors import ErrorCode, ProtocolError
from protocol.fields import AgentName, Count, HexDigest, MarketId, NonNegativeFloat, RequestId, RoundNumber, Seq
from protocol.market_rules import WIRE_MODEL, MarketRules, MechanismSettings

PROTOCOL_VERSION = 1

ModelT = TypeVar("ModelT", bound=BaseModel)
_set_slot = object.__setattr__


def assemble(model: type[ModelT], **fields: Any) -> ModelT:
    """``model.model_construct(**fields)`` for values already checked that give every field: what
    ``model_construct`` leaves in the instance, at a third of its cost (it matters on the per-bid and
    per-round paths). Given in the model's field order, the fields encode byte for byte as
    ``model_construct``'s would. ``tests/test_protocol_codec.py`` holds it equal to ``model_construct``."""
    instance = model.__new__(model)
    _set_slot(instance, "__dict__", fields)
    _set_slot(instance, "__pydantic_fields_set__", set(fields))
    _set_slot(instance, "__pydantic_extra__", None)
    _set_slot(instance, "__pydantic_private__", None)
    return instance


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

    @classmethod
    def of_aggregate(cls, tokens: list[str], probs: np.ndarray) -> OutcomeDistribution:
        """The mechanism's own aggregate, taken as it is: no checks (the mechanism guarantees them)."""
        return assemble(cls, tokens=tokens, probs=probs)

    def support_limit(self, context: dict[str, Any]) -> int:
        return len(self.tokens)


# --- what a market is -------------------------------------------------------------------------


class MarketInfo(BaseModel):
    """A market as agents learn it: its id, its public rules, who is invited and who is its reference."""

    model_config = WIRE_MODEL

    id: MarketId
    rules: MarketRules
    agents: list[AgentName] | None = None  # None: every registered agent is invited
    reference_agent: AgentName | None = None  # a registered agent whose bids are the reference p_0
    shard: str | None = None  # in an exchange of several shards: the one serving the market
    market_endpoint: str | None = None  # that shard's market socket, as clients reach it
    feed_endpoint: str | None = None  # and its feed


class ShardInfo(BaseModel):
    """A shard of an exchange that has several: its name, and where clients reach it."""

    model_config = WIRE_MODEL

    shard: str
    market_endpoint: str
    feed_endpoint: str


class MarketStatus(BaseModel):
    """Where a market stands: the latest round, feed seq, text and revenue, and why it closed."""

    model_config = WIRE_MODEL

    market: MarketInfo
    round: Count
    seq: Seq
    text: str
    revenue: NonNegativeFloat
    closed: str | None = None


# --- market socket: agent -> auctioneer -------------------------------------------------------


class Hello(Message):
    type: Literal["hello"] = "hello"
    name: AgentName
    client: Annotated[str, Field(max_length=128)] = ""
    resume: HexDigest | None = None  # the secret a previous welcome gave this name


class SealedBid(Message):
    field_codes: ClassVar[dict[str, ErrorCode]] = {
        "distribution": ErrorCode.INVALID_DISTRIBUTION,
        "bid": ErrorCode.INVALID_BID,
    }

    type: Literal["sealed_bid"] = "sealed_bid"
    round: RoundNumber
    distribution: Distribution
    bid: float = Field(json_schema_extra={"minimum": 0, "description": "a finite number >= 0"})
    market: MarketId | None = None

    @field_validator("bid")
    @classmethod
    def _finite_non_negative(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"bid must be a finite number >= 0, got {value}")
        return value


def seal_bid(
    round_number: int,
    distribution: Mapping[str, float],
    amount: float,
    max_support: int,
    market: str | None = None,
) -> SealedBid:
    """The ``sealed_bid`` for a distribution given as ``{token: probability}``, validated once against
    ``max_support``; ``ValidationError`` (a ``ValueError``) names what is wrong."""
    return SealedBid.model_validate(
        {
            "round": round_number,
            "distribution": {"tokens": list(distribution), "probs": list(distribution.values())},
            "bid": amount,
            "market": market,
        },
        strict=False,
        context={"max_support": max_support},
    )


class SyncRequest(Message):
    type: Literal["sync_request"] = "sync_request"
    since_seq: Seq = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 256
    market: MarketId | None = None


class Ping(Message):
    type: Literal["ping"] = "ping"


class ListMarkets(Message):
    """Open and recently closed markets (an agent sees those it is invited to)."""

    type: Literal["list_markets"] = "list_markets"


# --- market socket: operator -> auctioneer ----------------------------------------------------


class OpenMarket(Message):
    """Open a market. ``settings`` are a market's settings (the keys of ``serve``'s config); those not
    given take the exchange's defaults."""

    type: Literal["open_market"] = "open_market"
    settings: dict[str, Any] = {}
    market: MarketId | None = None  # the id to give it (default: generated)
    agents: list[AgentName] | None = None
    reference_agent: AgentName | None = None
    shard: str | None = None  # the shard to serve it (default: the least loaded live one)


class CloseMarket(Message):
    type: Literal["close_market"] = "close_market"
    market: MarketId


class SetBudget(Message):
    """Set an agent's budget across the exchange from now on (``None``: unlimited); it may not fall
    below what the agent has spent and what its open bids reserve."""

    type: Literal["set_budget"] = "set_budget"
    agent: AgentName
    budget: NonNegativeFloat | None


# --- market socket: auctioneer -> agent -------------------------------------------------------


class Welcome(Message):
    """Registration with the exchange. The default market's fields (``market`` to
    ``reference_weight``) are those of revision 1.2; ``markets`` lists every open market the agent
    is invited to."""

    type: Literal["welcome"] = "welcome"
    name: AgentName
    budget: float | None = None
    spent: float = 0.0
    heartbeat_interval: float
    exchange_seq: Seq = 0
    markets: list[MarketInfo] = []
    market: MarketId | None = None
    prompt: str | None = None
    seq: Seq | None = None
    round: Count | None = None
    mechanism: MechanismSettings | None = None
    max_bid: float | None = None
    max_support: int | None = None
    reference_weight: float = 0.0
    resume: HexDigest | None = None  # without CurveZMQ: the secret that takes this name back
    shards: list[ShardInfo] | None = None  # in an exchange of several shards: every live one


class BidAccepted(Message):
    type: Literal["bid_accepted"] = "bid_accepted"
    round: RoundNumber
    market: MarketId | None = None


class Error(Message):
    type: Literal["error"] = "error"
    code: str
    message: str
    field: str | None = None


def refusal(error: ProtocolError, re: int | None) -> Error:
    """The ``error`` reply to a refused request (``re``: its id), assembled from the refusal itself:
    refusals are what a flood gets, so they cost as little as a reply can."""
    return assemble(Error, type="error", id=None, re=re, code=str(error.code), message=error.message, field=error.field)


class Pong(Message):
    type: Literal["pong"] = "pong"
    seq: Seq  # the default market's seq (revision 1.2); the exchange's when there is none
    exchange_seq: Seq = 0
    spent: float = 0.0  # the agent's payments across the exchange so far
    reserved: float = 0.0  # what its bids in open rounds hold
    budget: float | None = None  # its budget as it now stands (an operator may change it); None: none


class MarketList(Message):
    type: Literal["market_list"] = "market_list"
    seq: Seq  # the exchange's notice seq
    markets: list[MarketStatus]
    default: MarketId | None = None  # the default market, if the exchange has one


class MarketStatusReply(Message):
    """The reply to ``open_market`` and ``close_market``."""

    type: Literal["market_status"] = "market_status"
    status: MarketStatus


class AccountStatus(Message):
    """The reply to ``set_budget``: the agent's account as it now stands."""

    type: Literal["account_status"] = "account_status"
    agent: AgentName
    budget: float | None  # None: unlimited
    spent: float
    reserved: float


# --- feed socket: a market's broadcasts, each with a strictly increasing seq per market ----------


class RoundOpen(Message):
    type: Literal["round_open"] = "round_open"
    seq: Seq
    round: RoundNumber
    text: str
    seed_commitment: HexDigest
    deadline: float
    timeout: float
    market: MarketId | None = None
    resumed: bool | None = None  # the market's first broadcast after a restart: it skips one seq


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
    market: MarketId | None = None
    reference_weight: NonNegativeFloat | None = None  # b_0 this round (absent: 0)


class MarketClosed(Message):
    type: Literal["market_closed"] = "market_closed"
    seq: Seq
    reason: str
    text: str
    rounds: Count
    market: MarketId | None = None
    resumed: bool | None = None  # as in round_open


class Heartbeat(Message):
    """Carries a market's latest seq without taking a new one, so a subscriber can spot a gap."""

    type: Literal["heartbeat"] = "heartbeat"
    seq: Seq
    round: Count
    time: float
    market: MarketId | None = None


class SyncReply(Message):
    """Clone-pattern snapshot of one market (prompt, text, tokens, balances, open round) plus missed results."""

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
    market: MarketId | None = None


# --- feed socket: exchange notices, with their own strictly increasing seq -----------------------


class MarketOpened(Message):
    type: Literal["market_opened"] = "market_opened"
    seq: Seq
    market: MarketInfo


class MarketEnded(Message):
    type: Literal["market_ended"] = "market_ended"
    seq: Seq
    market: MarketId
    reason: str
    rounds: Count


class ExchangeHeartbeat(Message):
    type: Literal["exchange_heartbeat"] = "exchange_heartbeat"
    seq: Seq
    time: float


MESSAGE_TYPES: dict[str, type[Message]] = {
    model.model_fields["type"].default: model
    for model in (
        Hello,
        SealedBid,
        SyncRequest,
        Ping,
        ListMarkets,
        OpenMarket,
        CloseMarket,
        SetBudget,
        Welcome,
        BidAccepted,
        Error,
        Pong,
        MarketList,
        MarketStatusReply,
        AccountStatus,
        RoundOpen,
        RoundResult,
        MarketClosed,
        Heartbeat,
        SyncReply,
        MarketOpened,
        MarketEnded,
        ExchangeHeartbeat,
    )
}

# What the auctioneer accepts on the market socket (operator requests are authorised separately).
AGENT_REQUESTS = frozenset({"hello", "sealed_bid", "sync_request", "ping", "list_markets"})
OPERATOR_REQUESTS = frozenset({"open_market", "close_market", "set_budget"})
AUCTIONEER_REQUESTS = AGENT_REQUESTS | OPERATOR_REQUESTS
MarketBroadcast = RoundOpen | RoundResult | MarketClosed | Heartbeat
ExchangeNotice = MarketOpened | MarketEnded | ExchangeHeartbeat

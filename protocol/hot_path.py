"""The two requests every round brings many of, decoded without building a generic map first.

A ``sealed_bid`` (one per agent per round) and a ``ping`` (every agent's heartbeat) are decoded by
msgspec's compiled msgpack decoder straight into typed structs: field types, integer bounds and
the ``type`` tag are checked in C as the bytes are read. What msgspec cannot say the same way as
the pydantic models (a market id's pattern, a bid's finiteness, the distribution's rules) is
checked here in Python on the decoded values.

This path only ever accepts: anything it does not take in the common shape (another message type,
another protocol version, a float given as a string, a bool where a number goes, a bad
distribution) gives ``None`` and the general path of :mod:`protocol.codec` decides, with the
model's own error. That one-way rule is what ``tests/test_protocol_codec.py`` checks, over valid
and invalid inputs: whatever this path accepts, the model accepts with equal values.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

import msgspec
import numpy as np

from protocol.distribution import SAFE_TOKEN_CHARS, Distribution, check_probabilities, check_support
from protocol.fields import AGENT_NAME_PATTERN
from protocol.messages import PROTOCOL_VERSION, Ping, SealedBid, assemble

_INT63 = msgspec.Meta(ge=0, le=2**63 - 1)
_MARKET_ID = re.compile(AGENT_NAME_PATTERN)

WireRequestId = Annotated[int, _INT63] | None
WIRE_FLOAT = np.dtype("<f8")
WIRE_FLOAT_IS_NATIVE = np.dtype(np.float64) == WIRE_FLOAT


class WireDistribution(msgspec.Struct):
    """A bid's distribution as read: tokens, and probabilities as float64 bytes or an array."""

    # Non-empty and short enough that no characters make it longer than MAX_TOKEN_BYTES in UTF-8
    # (longer tokens are valid and take the general path); msgspec has checked the UTF-8 itself.
    tokens: list[Annotated[str, msgspec.Meta(min_length=1, max_length=SAFE_TOKEN_CHARS)]]
    probs: bytes | list[float]


class WireBid(msgspec.Struct, tag_field="type", tag="sealed_bid"):
    """A ``sealed_bid`` as read: the types checked, the values not yet."""

    v: int
    round: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    bid: float
    distribution: WireDistribution
    id: WireRequestId = None
    re: WireRequestId = None
    market: str | None = None


class WirePing(msgspec.Struct, tag_field="type", tag="ping"):
    v: int
    id: WireRequestId = None
    re: WireRequestId = None


_DECODER = msgspec.msgpack.Decoder(WireBid | WirePing)


def read_hot(data: bytes) -> WireBid | WirePing | None:
    """The bid or ping that ``data`` is, typed but not yet checked; None for anything else."""
    try:
        wire = _DECODER.decode(data)
    except Exception:  # msgspec's errors, invalid UTF-8, nesting limits: the general path words them
        return None
    return wire if wire.v == PROTOCOL_VERSION else None


def checked_bid(wire: WireBid, max_support: int) -> SealedBid | None:
    """The :class:`SealedBid` that ``wire`` is if it passes every check of the model, else None."""
    market = wire.market
    if market is not None and not _MARKET_ID.fullmatch(market):
        return None
    if not (math.isfinite(wire.bid) and wire.bid >= 0):
        return None
    tokens, raw = wire.distribution.tokens, wire.distribution.probs
    if type(raw) is bytes:
        if len(raw) % 8:
            return None
        probs = np.frombuffer(raw, WIRE_FLOAT)  # zero-copy, read-only
        if not WIRE_FLOAT_IS_NATIVE:
            probs = probs.astype(np.float64)
    else:
        probs = np.array(raw, dtype=np.float64)
    try:
        check_support(tokens, probs, max_support)
        check_probabilities(probs)
    except ValueError:
        return None
    return assemble(
        SealedBid,
        type="sealed_bid",
        id=wire.id,
        re=wire.re,
        round=wire.round,
        distribution=assemble(Distribution, tokens=tokens, probs=probs),
        bid=wire.bid,
        market=market,
    )


def ping(wire: WirePing) -> Ping:
    """The heartbeat: nothing to check beyond its types."""
    return assemble(Ping, type="ping", id=wire.id, re=wire.re)

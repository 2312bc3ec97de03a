"""Stable error codes of the wire protocol and the exception that carries one.

Codes never change meaning; new ones may be added. Every rejected request is answered with an
``error`` message carrying one of these codes and a human-readable message.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    MALFORMED = "MALFORMED"  # not msgpack, not a map, wrong frame count, fields of the wrong type
    UNKNOWN_TYPE = "UNKNOWN_TYPE"  # a message type this peer does not handle
    VERSION = "VERSION"  # protocol version not supported
    TOO_LARGE = "TOO_LARGE"  # a message or distribution over the configured limits
    NOT_REGISTERED = "NOT_REGISTERED"  # send hello first (also after an auctioneer restart)
    NAME_TAKEN = "NAME_TAKEN"  # another live connection holds this agent name
    UNAUTHORIZED = "UNAUTHORIZED"  # the name does not match the authenticated key
    ROUND_CLOSED = "ROUND_CLOSED"  # the round is no longer collecting bids
    WRONG_ROUND = "WRONG_ROUND"  # the bid names a round that is not the open one
    DUPLICATE_BID = "DUPLICATE_BID"  # this agent already has an accepted bid this round
    INVALID_DISTRIBUTION = "INVALID_DISTRIBUTION"  # bad tokens or probabilities
    INVALID_BID = "INVALID_BID"  # bid not finite, negative, or over the market's maximum
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"  # bid above the agent's remaining budget
    MARKET_CLOSED = "MARKET_CLOSED"  # the market has ended
    INTERNAL = "INTERNAL"  # the auctioneer failed to handle a valid request (a bug; it keeps serving)


class ProtocolError(Exception):
    """A message was refused. ``field`` names the offending field when there is one."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {field + ': ' if field else ''}{message}")
        self.code = code
        self.message = message
        self.field = field

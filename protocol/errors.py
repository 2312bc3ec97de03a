"""Stable error codes of the wire protocol, the exception that carries one, error wording, and the
base of every error that is the user's to fix (:class:`UserError`).

Codes never change meaning; new ones may be added. Every rejected request is answered with an
``error`` message carrying one of these codes and a human-readable message. Validation failures
are worded once here, for the wire and for every settings loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from protocol.fields import AGENT_NAME_PATTERN, NAME_RULE


class ErrorCode(StrEnum):
    MALFORMED = "MALFORMED"  # not msgpack, not a map, wrong frame count, fields of the wrong type
    UNKNOWN_TYPE = "UNKNOWN_TYPE"  # a message type this peer does not handle
    VERSION = "VERSION"  # protocol version not supported
    TOO_LARGE = "TOO_LARGE"  # a message over the size limit, or a bid that would overflow the round's vocabulary
    NOT_REGISTERED = "NOT_REGISTERED"  # send hello first (also after an auctioneer restart)
    NAME_TAKEN = "NAME_TAKEN"  # the name is another agent's: connected elsewhere, or bound to a resume secret
    UNAUTHORIZED = "UNAUTHORIZED"  # the name does not match the authenticated key, or not an operator
    ROUND_CLOSED = "ROUND_CLOSED"  # the round is no longer collecting bids
    WRONG_ROUND = "WRONG_ROUND"  # the bid names a round that is not the open one
    DUPLICATE_BID = "DUPLICATE_BID"  # this agent already has an accepted bid this round
    INVALID_DISTRIBUTION = "INVALID_DISTRIBUTION"  # bad tokens or probabilities
    INVALID_BID = "INVALID_BID"  # bid not finite, negative, or over the market's maximum
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"  # bid above the agent's remaining budget
    MARKET_CLOSED = "MARKET_CLOSED"  # the market has ended
    UNKNOWN_MARKET = "UNKNOWN_MARKET"  # no market has this id (or, without an id, there is no default market)
    NOT_INVITED = "NOT_INVITED"  # the market is limited to other agents
    INVALID_SETTINGS = "INVALID_SETTINGS"  # open_market with settings that cannot run
    LIMIT_REACHED = (
        "LIMIT_REACHED"  # a per-connection or per-address limit (one name per connection, names per address)
    )
    WRONG_SHARD = "WRONG_SHARD"  # the market is served by another shard of the exchange (the message says where)
    INTERNAL = "INTERNAL"  # the auctioneer failed to handle a valid request (a bug; it keeps serving)


class UserError(Exception):
    """A mistake the user can fix (a setting, a file, an address, a peer that refused them): its
    message is the one actionable line a command prints, never a traceback. Every library's errors of
    that kind derive from it; ``cli.console`` catches it."""


class ProtocolError(Exception):
    """A message was refused. ``field`` names the offending field when there is one; ``request_id``
    is the refused request's ``id`` when it could be read (the error reply carries it as ``re``), and
    ``request_type`` its ``type``."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None, request_id: int | None = None) -> None:
        super().__init__(f"{code}: {field + ': ' if field else ''}{message}")
        self.code = code
        self.message = message
        self.field = field
        self.request_id = request_id
        self.request_type: str | None = None


def error_message(error: Mapping[str, Any]) -> str:
    """The human part of one pydantic error, without pydantic's ``Value error, `` prefix; a name or an
    amount that breaks its rule is quoted (at most 64 characters of it) with the rule."""
    shown = repr(error.get("input"))[:64]
    if error["type"] == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == AGENT_NAME_PATTERN:
        return f"{shown} is not a name: {NAME_RULE}"
    if error["type"] == "finite_number":
        return f"{shown} is not a finite number"
    return str(error["msg"]).removeprefix("Value error, ")


def describe_validation_error(exc: ValidationError) -> str:
    """``bids[0].distribution: probabilities sum to 0.9, ...``: the first failure of a model, in one line."""
    first = exc.errors(include_url=False)[0]
    path = ""
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return f"{path}: {error_message(first)}" if path else error_message(first)

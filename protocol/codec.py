"""The codec: the only place where bytes become messages and messages become bytes.

Decoding is bounded (a maximum message size, msgpack's own length limits, ``strict_map_key``)
and every failure is a :class:`ProtocolError` with a stable code; nothing else escapes.

How much is accepted depends on who wrote the bytes: :data:`LIMITS` says it once, for requests
from the network (read by the auctioneer; its settings may change them), for replies and
broadcasts from the auctioneer (read by agents and observers), and for the ledger's own rows
(written by the auctioneer itself, never bounded).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import msgpack
from pydantic import ValidationError

from protocol.distribution import DEFAULT_MAX_SUPPORT
from protocol.errors import ErrorCode, ProtocolError, error_message
from protocol.messages import MESSAGE_TYPES, PROTOCOL_VERSION, Message

log = logging.getLogger(__name__)

UNBOUNDED = 2**62


@dataclass(frozen=True)
class Limits:
    """Bounds applied while decoding: the frame's size and the support of a bid's distribution."""

    max_message_bytes: int
    max_support: int = DEFAULT_MAX_SUPPORT


@dataclass(frozen=True)
class LimitsByTrust:
    """Which bounds apply to bytes from each source."""

    requests: Limits
    from_auctioneer: Limits
    stored: Limits


LIMITS = LimitsByTrust(
    requests=Limits(max_message_bytes=4 * 1024 * 1024),
    from_auctioneer=Limits(max_message_bytes=64 * 1024 * 1024),
    stored=Limits(max_message_bytes=UNBOUNDED, max_support=UNBOUNDED),
)


@functools.cache
def _optional_fields(model: type[Message]) -> frozenset[str]:
    """The fields of ``model`` that default to nil: left out of the map when they are nil."""
    return frozenset(
        name for name, field in model.model_fields.items() if not field.is_required() and field.default is None
    )


def encode(message: Message) -> bytes:
    """Pack a message as one msgpack map with the protocol version; optional fields left unset are
    absent (a required field that may be nil, such as an idle round's ``token``, is sent as nil)."""
    body = message.model_dump(mode="python")
    for optional in _optional_fields(type(message)):
        if body[optional] is None:
            del body[optional]
    body["v"] = PROTOCOL_VERSION
    return msgpack.packb(body, use_bin_type=True)


def unpack_map(data: bytes, limits: Limits = LIMITS.requests) -> dict[str, Any]:
    """msgpack bytes to a map, with the size bound; ``MALFORMED`` for anything else."""
    if len(data) > limits.max_message_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message of {len(data)} bytes exceeds {limits.max_message_bytes}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(ErrorCode.MALFORMED, f"not a msgpack message ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "a message must be a msgpack map")
    return obj


def decode(data: bytes, limits: Limits = LIMITS.requests, accepted: Collection[str] | None = None) -> Message:
    """Bytes to the typed message they encode, or :class:`ProtocolError`.

    ``accepted`` limits the message types this receiver handles; others are ``UNKNOWN_TYPE``.
    """
    obj = unpack_map(data, limits)
    version = obj.get("v")
    if type(version) is not int:
        raise ProtocolError(ErrorCode.MALFORMED, "missing or non-integer protocol version", "v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.VERSION, f"protocol version {version} unsupported; speak {PROTOCOL_VERSION}", "v")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.MALFORMED, "missing or non-string message type", "type")
    model = MESSAGE_TYPES.get(kind) if accepted is None or kind in accepted else None
    if model is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:64]!r}", "type")
    try:
        return model.model_validate(obj, context={"max_support": limits.max_support})
    except ValidationError as exc:
        raise validation_failure(model, exc) from None


def validation_failure(model: type[Message], exc: ValidationError) -> ProtocolError:
    """The protocol error for a model's first validation failure, naming its field."""
    first = exc.errors(include_url=False, include_input=False)[0]
    location = ".".join(str(part) for part in first["loc"])
    top = str(first["loc"][0]) if first["loc"] else ""
    code = ErrorCode.MALFORMED if first["type"] == "missing" else model.field_codes.get(top, ErrorCode.MALFORMED)
    return ProtocolError(code, error_message(first), location or None)

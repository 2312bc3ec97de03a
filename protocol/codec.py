"""The codec: the only place where bytes become messages and messages become bytes.

Decoding is bounded (a maximum message size, msgpack's own length limits, ``strict_map_key``)
and every failure is a :class:`ProtocolError` with a stable code; nothing else escapes.

How much is accepted depends on who wrote the bytes: :data:`LIMITS` says it once, for requests
from the network (read by the auctioneer; its settings may change them), for replies and
broadcasts from the auctioneer (read by agents and observers), and for the ledger's own rows
(written by the auctioneer itself, never bounded).

Sealed bids and pings, the requests every round brings many of, take a compiled path when well
formed (:mod:`protocol.hot_path`); anything else, and any refusal, goes through the message's
pydantic model.
"""

from __future__ import annotations

import functools
import logging
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
import msgspec
from pydantic import ValidationError

from protocol.distribution import DEFAULT_MAX_SUPPORT, Distribution
from protocol.errors import ErrorCode, ProtocolError, error_message
from protocol.hot_path import WireBid, WirePing, checked_bid, ping, read_hot
from protocol.messages import MESSAGE_TYPES, PROTOCOL_VERSION, Message, SealedBid

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


def _is_scalar(annotation: Any) -> bool:
    if annotation in (str, int, float, bool, type(None)):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return True
    if origin is typing.Annotated:
        return _is_scalar(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return all(_is_scalar(argument) for argument in typing.get_args(annotation))
    return False


def _is_plain(annotation: Any) -> bool:
    """A scalar, or a map or array of scalars: the value as stored is what goes on the wire."""
    if typing.get_origin(annotation) in (dict, list):
        return all(_is_scalar(argument) for argument in typing.get_args(annotation))
    return _is_scalar(annotation)


def _is_distribution(annotation: Any) -> bool:
    """A :class:`Distribution`, or one or nil."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return all(argument is type(None) or _is_distribution(argument) for argument in typing.get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, Distribution)


@functools.cache
def _distribution_fields(model: type[Message]) -> tuple[str, ...] | None:
    """The fields of ``model`` that hold a distribution, when every other field is plain (its attributes
    are then the wire map once each distribution is mapped); None when the model needs pydantic's
    serialiser."""
    distributions = []
    for name, field in model.model_fields.items():
        if _is_distribution(field.annotation):
            distributions.append(name)
        elif not _is_plain(field.annotation):
            return None
    return tuple(distributions)


def _wire_map(message: Message) -> dict[str, Any]:
    kind = type(message)
    distributions = _distribution_fields(kind)
    if distributions is None:
        body = message.model_dump(mode="python")
    else:
        body = dict(message.__dict__)
        for name in distributions:
            if body[name] is not None:
                body[name] = body[name].wire_map()
    for optional in _optional_fields(kind):
        if body[optional] is None:
            del body[optional]
    body["v"] = PROTOCOL_VERSION
    return body


def _as_builtin(value: Any) -> Any:
    """What msgspec's encoder is given for subclasses of the plain types it does not take as they are
    (numpy's float64, say): the plain value, packed exactly as ``msgpack.packb`` packs it."""
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    raise TypeError(f"cannot encode a {type(value).__name__} as msgpack")


def pack(value: Any) -> bytes:
    """msgpack bytes of plain values (maps, arrays, strings, numbers, bytes as ``bin``): the bytes
    ``msgpack.packb(value, use_bin_type=True)`` gives, from msgspec at a quarter of its cost. (msgspec's
    module-level ``encode``, not a shared ``Encoder``: an ``Encoder`` reuses one buffer across calls,
    and this may be called from any thread, an agent's worker threads included.)"""
    return msgspec.msgpack.encode(value, enc_hook=_as_builtin)


def encode(message: Message) -> bytes:
    """Pack a message as one msgpack map with the protocol version; optional fields left unset are
    absent (a required field that may be nil, such as an idle round's ``token``, is sent as nil)."""
    return pack(_wire_map(message))


def encode_with_encoded(message: Message, field: str, encoded: Sequence[bytes]) -> bytes:
    """``encode(message)`` with ``field`` set to an array of messages already encoded (stored
    broadcasts, sent as the very bytes they were broadcast as: nothing is decoded or packed again)."""
    body = _wire_map(message)
    body.pop(field, None)
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_map_header(len(body) + 1)]
    for key, value in body.items():
        parts += [packer.pack(key), packer.pack(value)]
    parts += [packer.pack(field), packer.pack_array_header(len(encoded)), *encoded]
    return b"".join(parts)


def _check_size(data: bytes, limits: Limits) -> None:
    if len(data) > limits.max_message_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message of {len(data)} bytes exceeds {limits.max_message_bytes}")


def unpack_map(data: bytes, limits: Limits = LIMITS.requests) -> dict[str, Any]:
    """msgpack bytes to a map, with the size bound; ``MALFORMED`` for anything else."""
    _check_size(data, limits)
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        if isinstance(exc, ValueError) and "map key" in str(exc):
            raise ProtocolError(ErrorCode.MALFORMED, "map keys must be strings") from None
        raise ProtocolError(ErrorCode.MALFORMED, f"not a msgpack message ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "a message must be a msgpack map")
    return obj


BidPrecheck = Callable[[Mapping[str, Any]], None]


def decode(
    data: bytes,
    limits: Limits = LIMITS.requests,
    accepted: Collection[str] | None = None,
    precheck_bid: BidPrecheck | None = None,
) -> Message:
    """Bytes to the typed message they encode, or :class:`ProtocolError`.

    ``accepted`` limits the message types this receiver handles; others are ``UNKNOWN_TYPE``.
    ``precheck_bid`` sees a ``sealed_bid``'s fields before its distribution is checked and may
    refuse it (the receiver's cheap checks first). Once the bytes are a map, a refusal carries the
    map's ``id`` (if it is a valid request id) as ``request_id``, so the error reply can name the
    request, and its ``type`` (if a string) as ``request_type``.
    """
    _check_size(data, limits)
    hot = read_hot(data)
    if isinstance(hot, WireBid) and (accepted is None or "sealed_bid" in accepted):
        if precheck_bid is not None:
            fields = {"market": hot.market, "round": hot.round, "bid": hot.bid}
            try:
                precheck_bid(fields)
            except ProtocolError as exc:
                raise _naming_the_request(exc, hot.id, "sealed_bid") from None
        bid = checked_bid(hot, limits.max_support)
        if bid is not None:
            return bid
    elif isinstance(hot, WirePing) and (accepted is None or "ping" in accepted):
        return ping(hot)
    obj = unpack_map(data, limits)
    try:
        return _decode_map(obj, limits, accepted, precheck_bid)
    except ProtocolError as exc:
        raise _naming_the_request(exc, obj.get("id"), obj.get("type")) from None


Admitted = TypeVar("Admitted")


def decode_request(
    data: bytes,
    limits: Limits,
    accepted: Collection[str] | None,
    admit_bid: Callable[[Mapping[str, Any]], Admitted],
) -> tuple[Message, Admitted | None]:
    """:func:`decode` with ``admit_bid`` as the bid precheck, and what it returned for this request
    (None if it was not asked: not a bid, or fields of the wrong type), so the receiver can hand a
    bid's admission on instead of checking it again."""
    admitted: list[Admitted] = []
    message = decode(data, limits, accepted, lambda fields: admitted.append(admit_bid(fields)))
    return message, admitted[-1] if admitted else None


def _naming_the_request(refusal: ProtocolError, request_id: Any, request_type: Any) -> ProtocolError:
    """``refusal`` with the request's ``id`` and ``type``, where they are valid."""
    if type(request_id) is int and _request_id(request_id):
        refusal.request_id = request_id
    if type(request_type) is str:
        refusal.request_type = request_type
    return refusal


def _decode_map(
    obj: dict[str, Any], limits: Limits, accepted: Collection[str] | None, precheck_bid: BidPrecheck | None
) -> Message:
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
    if model is SealedBid and precheck_bid is not None:
        precheck_bid(obj)
    try:
        return model.model_validate(obj, context={"max_support": limits.max_support})
    except ValidationError as exc:
        raise validation_failure(model, exc) from None


def _request_id(value: Any) -> bool:
    return value is None or (type(value) is int and 0 <= value < 2**63)


def validation_failure(model: type[Message], exc: ValidationError) -> ProtocolError:
    """The protocol error for a model's first validation failure, naming its field."""
    first = exc.errors(include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"])
    top = str(first["loc"][0]) if first["loc"] else ""
    code = ErrorCode.MALFORMED if first["type"] == "missing" else model.field_codes.get(top, ErrorCode.MALFORMED)
    return ProtocolError(code, error_message(first), location or None)

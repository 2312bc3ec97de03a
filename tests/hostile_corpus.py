"""Malformed and malicious requests for the market socket, each with the outcome SPEC.md documents.

An entry is ``(label, frames, expected)``: ``frames`` are sent as one multipart message by a
registered DEALER; ``expected`` is an error code, or ``DROPPED`` for frames the transport refuses.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

DROPPED = "DROPPED"
VALID_DIST = {"tokens": ["h"], "probs": [1.0]}


def pack(body: dict[str, Any]) -> bytes:
    return msgpack.packb({"v": 1, **body})


def bid(round_: Any, amount: Any = 1.0, **distribution: Any) -> bytes:
    return pack({"type": "sealed_bid", "round": round_, "bid": amount, "distribution": {**VALID_DIST, **distribution}})


def with_field(message: bytes, key: str, packed_value: bytes) -> bytes:
    """``message`` (a msgpack fixmap) with one more entry whose value is given already packed."""
    return bytes([message[0] + 1]) + message[1:] + msgpack.packb(key) + packed_value


def nested(depth: int) -> bytes:
    """``[[[...1...]]]``: ``depth`` one-element arrays (0x91), built by hand (packb would recurse)."""
    return b"\x91" * depth + b"\x01"


def corpus(
    open_round: int, closed_round: int, honest_name: str, max_message_bytes: int
) -> list[tuple[str, list[bytes], str]]:
    r = open_round
    huge_support = [f"t{i}" for i in range(100_000)]
    return [
        ("not msgpack", [b"\xc1\xff\x00"], "MALFORMED"),
        ("empty frame", [b""], "MALFORMED"),
        ("truncated bid", [bid(r)[:-4]], "MALFORMED"),
        ("bare integer", [msgpack.packb(7)], "MALFORMED"),
        ("bare list", [msgpack.packb([1, 2, 3])], "MALFORMED"),
        ("bare string", [msgpack.packb("sealed_bid")], "MALFORMED"),
        ("integer map keys", [msgpack.packb({1: 1, 2: "sealed_bid"})], "MALFORMED"),
        ("no version", [msgpack.packb({"type": "ping"})], "MALFORMED"),
        ("version as string", [msgpack.packb({"v": "1", "type": "ping"})], "MALFORMED"),
        ("future version", [msgpack.packb({"v": 2, "type": "ping"})], "VERSION"),
        ("version zero", [msgpack.packb({"v": 0, "type": "ping"})], "VERSION"),
        ("no type", [msgpack.packb({"v": 1})], "MALFORMED"),
        ("type as integer", [msgpack.packb({"v": 1, "type": 3})], "MALFORMED"),
        ("unknown type", [pack({"type": "steal_funds"})], "UNKNOWN_TYPE"),
        ("server-only type round_result", [pack({"type": "round_result"})], "UNKNOWN_TYPE"),
        ("server-only type welcome", [pack({"type": "welcome"})], "UNKNOWN_TYPE"),
        ("two frames", [bid(r), bid(r)], "MALFORMED"),
        ("three frames, no delimiter", [b"x", b"y", bid(r)], "MALFORMED"),
        ("bid without distribution", [pack({"type": "sealed_bid", "round": r, "bid": 1.0})], "MALFORMED"),
        ("round as string", [bid(str(r))], "MALFORMED"),
        ("round negative", [bid(-1)], "MALFORMED"),
        ("round as float", [bid(float(r))], "MALFORMED"),
        ("round beyond int64", [bid(2**64 - 1)], "MALFORMED"),
        ("bid NaN", [bid(r, math.nan)], "INVALID_BID"),
        ("bid +inf", [bid(r, math.inf)], "INVALID_BID"),
        ("bid -inf", [bid(r, -math.inf)], "INVALID_BID"),
        ("bid negative", [bid(r, -5.0)], "INVALID_BID"),
        ("bid huge", [bid(r, 1e300)], "INVALID_BID"),
        ("bid as string", [bid(r, "100")], "INVALID_BID"),
        ("bid as bool", [bid(r, True)], "INVALID_BID"),
        ("probability NaN", [bid(r, tokens=["h", "i"], probs=[math.nan, 0.5])], "INVALID_DISTRIBUTION"),
        ("probability inf", [bid(r, tokens=["h", "i"], probs=[math.inf, 0.5])], "INVALID_DISTRIBUTION"),
        ("probability negative", [bid(r, tokens=["h", "i"], probs=[-0.5, 1.5])], "INVALID_DISTRIBUTION"),
        ("probabilities sum to 0.5", [bid(r, tokens=["h", "i"], probs=[0.25, 0.25])], "INVALID_DISTRIBUTION"),
        ("probabilities sum to 1.5", [bid(r, tokens=["h", "i"], probs=[0.75, 0.75])], "INVALID_DISTRIBUTION"),
        ("unequal arrays", [bid(r, tokens=["h", "i"], probs=[1.0])], "INVALID_DISTRIBUTION"),
        ("duplicate tokens", [bid(r, tokens=["h", "h"], probs=[0.5, 0.5])], "INVALID_DISTRIBUTION"),
        ("empty token", [bid(r, tokens=[""], probs=[1.0])], "INVALID_DISTRIBUTION"),
        ("300-byte token", [bid(r, tokens=["x" * 300], probs=[1.0])], "INVALID_DISTRIBUTION"),
        ("token not a string", [bid(r, tokens=[42], probs=[1.0])], "INVALID_DISTRIBUTION"),
        ("probs bin of 12 bytes", [bid(r, tokens=["h"], probs=b"\x00" * 12)], "INVALID_DISTRIBUTION"),
        ("100k-token support", [bid(r, tokens=huge_support, probs=b"\x00" * 8 * 100_000)], "INVALID_DISTRIBUTION"),
        ("empty support", [bid(r, tokens=[], probs=[])], "INVALID_DISTRIBUTION"),
        (
            "distribution as list",
            [pack({"type": "sealed_bid", "round": r, "bid": 1.0, "distribution": [1]})],
            "INVALID_DISTRIBUTION",
        ),
        ("bid for a closed round (replay)", [bid(closed_round)], "ROUND_CLOSED"),
        ("bid for a future round", [bid(r + 3)], "WRONG_ROUND"),
        ("bid for a far future round", [bid(2**62)], "WRONG_ROUND"),
        ("hello with a second name on one connection", [pack({"type": "hello", "name": honest_name})], "LIMIT_REACHED"),
        (
            "hello with a non-hex resume secret",
            [pack({"type": "hello", "name": "m2", "resume": "z" * 64})],
            "MALFORMED",
        ),
        (
            "hello with a 129-character client",
            [pack({"type": "hello", "name": "m3", "client": "c" * 129})],
            "MALFORMED",
        ),
        ("request id as float", [pack({"type": "ping", "id": 1.5})], "MALFORMED"),
        ("request id negative", [pack({"type": "ping", "id": -1})], "MALFORMED"),
        ("integer keys inside a bid", [bid(r, **{"tokens": ["h"], "probs": {0: 1.0}})], "MALFORMED"),
        ("sync limit over 1000", [pack({"type": "sync_request", "limit": 1001})], "MALFORMED"),
        ("sync of an unknown market", [pack({"type": "sync_request", "market": "nowhere"})], "UNKNOWN_MARKET"),
        ("bid in an unknown market", [pack({**msgpack.unpackb(bid(r)), "market": "nowhere"})], "UNKNOWN_MARKET"),
        ("hello with empty name", [pack({"type": "hello", "name": ""})], "MALFORMED"),
        ("hello with spaces in name", [pack({"type": "hello", "name": "mal lory"})], "MALFORMED"),
        ("hello with 65-char name", [pack({"type": "hello", "name": "m" * 65})], "MALFORMED"),
        ("sync limit zero", [pack({"type": "sync_request", "since_seq": 0, "limit": 0})], "MALFORMED"),
        ("sync negative seq", [pack({"type": "sync_request", "since_seq": -1})], "MALFORMED"),
        ("deeply nested msgpack", [nested(5000)], "MALFORMED"),
        ("a bid with a deeply nested unknown field", [with_field(bid(r), "x", nested(100_000))], "MALFORMED"),
        (
            "a ping with a deeply nested unknown field",
            [with_field(pack({"type": "ping"}), "x", nested(100_000))],
            "MALFORMED",
        ),
        ("msgpack ext type", [msgpack.packb(msgpack.ExtType(5, b"boom"))], "MALFORMED"),
        ("oversized frame", [b"\x00" * (max_message_bytes + 1)], DROPPED),
    ]

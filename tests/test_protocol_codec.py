"""The codec: round trips of every message, the SPEC's hex dump, and one rejection per bad case."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import Distribution, ErrorCode, Limits, MechanismSettings, ProtocolError, decode, encode
from protocol.codec import pack, unpack_map
from protocol.distribution import DEFAULT_MAX_SUPPORT, SMALL_SUPPORT, check_probabilities
from protocol.hot_path import WireBid, WirePing, checked_bid, read_hot
from protocol.market_rules import MarketRules
from protocol.messages import (
    MESSAGE_TYPES,
    AccountStatus,
    BidAccepted,
    CloseMarket,
    Error,
    ExchangeHeartbeat,
    Heartbeat,
    Hello,
    ListMarkets,
    MarketClosed,
    MarketEnded,
    MarketInfo,
    MarketList,
    MarketOpened,
    MarketStatus,
    MarketStatusReply,
    Message,
    OpenMarket,
    OutcomeDistribution,
    Ping,
    Pong,
    RoundOpen,
    RoundResult,
    SealedBid,
    SetBudget,
    SyncReply,
    SyncRequest,
    Welcome,
    assemble,
    refusal,
)

SPEC = Path(__file__).resolve().parents[1] / "protocol" / "SPEC.md"
COMMIT = "ab" * 32
DIST = Distribution.from_mapping({" Large": 0.8, " Generative": 0.2})
RESULT = RoundResult(
    seq=2,
    round=1,
    token=" Large",
    text="Mechanism Design for Large",
    distribution=OutcomeDistribution.from_arrays([" Generative", " Large"], np.array([0.44, 0.56])),
    bids={"a1": 1.0},
    payments={"a1": 1.0},
    balances={"a1": 1.0},
    seed="cd" * 32,
    seed_commitment=COMMIT,
)
OPEN = RoundOpen(seq=1, round=1, text="Mechanism Design for", seed_commitment=COMMIT, deadline=1e9, timeout=2.0)
INFO = MarketInfo(id="hawaii", rules=MarketRules(prompt="Vacations in Hawaii:", payment="critical_bid"), agents=["a"])
STATUS = MarketStatus(market=INFO, round=2, seq=5, text="Vacations in Hawaii: Fly", revenue=1.5)
EVERY_MESSAGE: list[Message] = [
    Hello(name="agent-1", client="test", id=1),
    SealedBid(round=1, distribution=DIST, bid=1.5, id=2),
    SyncRequest(since_seq=3, limit=10),
    Ping(id=9),
    Welcome(
        name="agent-1",
        market="m",
        prompt="p",
        seq=0,
        round=0,
        budget=10.0,
        max_bid=1e9,
        max_support=4096,
        mechanism=MechanismSettings(aggregation="linear", payment="first_price", mode="sample", temperature=1.0),
        heartbeat_interval=1.0,
        re=1,
    ),
    BidAccepted(round=1, re=2),
    Error(code="WRONG_ROUND", message="no", field="round"),
    Pong(seq=4, re=9),
    Pong(seq=4, exchange_seq=2, spent=1.5, reserved=0.5, budget=10.0, re=10),
    OPEN,
    RESULT,
    MarketClosed(seq=3, reason="max_tokens", text="t", rounds=1),
    Heartbeat(seq=3, round=1, time=5.0),
    SyncReply(seq=2, last_round=1, prompt="p", text="t", tokens=["t"], balances={}, results=[RESULT], open_round=OPEN),
    ListMarkets(id=4),
    OpenMarket(settings={"prompt": "Vacations in Hawaii:", "max_tokens": 12}, market="hawaii", agents=["a"], id=5),
    CloseMarket(market="hawaii", id=6),
    SetBudget(agent="alpha", budget=80.0, id=7),
    SetBudget(agent="alpha", budget=None, id=8),
    MarketList(seq=3, markets=[STATUS], default="hawaii", re=4),
    MarketStatusReply(status=STATUS, re=5),
    AccountStatus(agent="alpha", budget=80.0, spent=12.5, reserved=1.0, re=7),
    MarketOpened(seq=1, market=INFO),
    MarketEnded(seq=2, market="hawaii", reason="operator", rounds=2),
    ExchangeHeartbeat(seq=2, time=5.0),
]


def test_every_message_type_is_covered() -> None:
    assert {m.type for m in EVERY_MESSAGE} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: m.type)
def test_round_trip(message: Message) -> None:
    again = decode(encode(message))
    assert type(again) is type(message)
    assert encode(again) == encode(message)


def test_a_round_without_bids_round_trips_with_nil_token() -> None:
    idle = RESULT.model_copy(update={"token": None, "distribution": None, "bids": {}, "payments": {}})
    again = decode(encode(idle))
    assert isinstance(again, RoundResult) and again.token is None and again.distribution is None


def test_spec_hex_dump_decodes_to_its_description() -> None:
    dump = SPEC.read_text().split("```")[1]
    data = bytes.fromhex("".join(re.sub(r"^[0-9a-f]{4}  ", "", line) for line in dump.strip().splitlines()))
    message = decode(data)
    assert isinstance(message, SealedBid)
    assert (message.id, message.round, message.bid) == (7, 1, 1.0)
    assert message.distribution.as_mapping() == {" Large": 0.8, " Generative": 0.2}
    assert encode(message) == data


def test_probabilities_may_travel_as_a_plain_array() -> None:
    raw = {
        "v": 1,
        "type": "sealed_bid",
        "round": 1,
        "bid": 2,
        "distribution": {"tokens": ["a", "b"], "probs": [0.5, 0.5]},
    }
    message = decode(msgpack.packb(raw))
    assert isinstance(message, SealedBid) and message.bid == 2.0
    assert message.distribution.probs.tolist() == [0.5, 0.5]


def bid_frame(**overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "v": 1,
        "type": "sealed_bid",
        "round": 1,
        "bid": 1.0,
        "distribution": {"tokens": ["a", "b"], "probs": [0.5, 0.5]},
    }
    distribution = overrides.pop("distribution", {})
    body["distribution"] = {**body["distribution"], **distribution}
    body.update(overrides)
    return msgpack.packb(body)


REJECTIONS: list[tuple[str, bytes, ErrorCode]] = [
    ("not msgpack", b"\xc1\xc1", ErrorCode.MALFORMED),
    ("truncated", bid_frame()[:-3], ErrorCode.MALFORMED),
    ("not a map", msgpack.packb([1, 2]), ErrorCode.MALFORMED),
    ("integer map keys", msgpack.packb({1: 2}), ErrorCode.MALFORMED),
    ("no version", msgpack.packb({"type": "ping"}), ErrorCode.MALFORMED),
    ("wrong version", msgpack.packb({"v": 2, "type": "ping"}), ErrorCode.VERSION),
    ("unknown type", msgpack.packb({"v": 1, "type": "steal"}), ErrorCode.UNKNOWN_TYPE),
    ("missing field", msgpack.packb({"v": 1, "type": "sealed_bid", "round": 1}), ErrorCode.MALFORMED),
    ("round as string", bid_frame(round="1"), ErrorCode.MALFORMED),
    ("round as bool", bid_frame(round=True), ErrorCode.MALFORMED),
    ("round zero", bid_frame(round=0), ErrorCode.MALFORMED),
    ("unequal arrays", bid_frame(distribution={"probs": [1.0]}), ErrorCode.INVALID_DISTRIBUTION),
    ("empty support", bid_frame(distribution={"tokens": [], "probs": []}), ErrorCode.INVALID_DISTRIBUTION),
    ("empty token", bid_frame(distribution={"tokens": ["", "b"]}), ErrorCode.INVALID_DISTRIBUTION),
    ("duplicate tokens", bid_frame(distribution={"tokens": ["a", "a"]}), ErrorCode.INVALID_DISTRIBUTION),
    ("token over 256 bytes", bid_frame(distribution={"tokens": ["é" * 129, "b"]}), ErrorCode.INVALID_DISTRIBUTION),
    ("NaN probability", bid_frame(distribution={"probs": [math.nan, 0.5]}), ErrorCode.INVALID_DISTRIBUTION),
    ("infinite probability", bid_frame(distribution={"probs": [math.inf, 0.5]}), ErrorCode.INVALID_DISTRIBUTION),
    ("negative probability", bid_frame(distribution={"probs": [-0.5, 1.5]}), ErrorCode.INVALID_DISTRIBUTION),
    ("sum not one", bid_frame(distribution={"probs": [0.5, 0.4]}), ErrorCode.INVALID_DISTRIBUTION),
    ("probs bin not float64", bid_frame(distribution={"probs": b"\x00" * 12}), ErrorCode.INVALID_DISTRIBUTION),
    ("token not a string", bid_frame(distribution={"tokens": [1, "b"]}), ErrorCode.INVALID_DISTRIBUTION),
    ("NaN bid", bid_frame(bid=math.nan), ErrorCode.INVALID_BID),
    ("infinite bid", bid_frame(bid=math.inf), ErrorCode.INVALID_BID),
    ("negative bid", bid_frame(bid=-1.0), ErrorCode.INVALID_BID),
    ("bid as string", bid_frame(bid="1"), ErrorCode.INVALID_BID),
    ("bad agent name", msgpack.packb({"v": 1, "type": "hello", "name": "a b"}), ErrorCode.MALFORMED),
]


@pytest.mark.parametrize("frame,code", [(f, c) for _, f, c in REJECTIONS], ids=[n for n, _, _ in REJECTIONS])
def test_rejections_carry_their_code(frame: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert caught.value.code == code


def test_support_over_the_configured_maximum_is_refused() -> None:
    tokens = [f"t{i}" for i in range(20)]
    frame = bid_frame(distribution={"tokens": tokens, "probs": [1 / 20] * 20})
    assert isinstance(decode(frame, Limits(max_message_bytes=2**20, max_support=20)), SealedBid)
    with pytest.raises(ProtocolError) as caught:
        decode(frame, Limits(max_message_bytes=2**20, max_support=19))
    assert caught.value.code == ErrorCode.INVALID_DISTRIBUTION and "maximum of 19" in caught.value.message


def test_oversized_message_is_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(b"\x00" * 101, Limits(max_message_bytes=100))
    assert caught.value.code == ErrorCode.TOO_LARGE


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=300))
def test_fuzzed_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(
    kind=st.sampled_from(sorted(MESSAGE_TYPES)),
    fields=st.dictionaries(
        st.sampled_from(["round", "bid", "distribution", "name", "seq", "tokens", "id", "re", "results", "probs"]),
        msgpack_values,
        max_size=5,
    ),
)
def test_fuzzed_structures_raise_only_protocol_errors(kind: str, fields: dict[str, Any]) -> None:
    with contextlib.suppress(ProtocolError):
        decode(msgpack.packb({"v": 1, "type": kind, **fields}))


# --- the compiled path for sealed bids and pings ----------------------------------------------

anything = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=4), st.binary(max_size=24)
)


@st.composite
def valid_bids(draw: st.DrawFn) -> dict[str, Any]:
    tokens = draw(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=8, unique=True))
    weights = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=len(tokens), max_size=len(tokens))))
    probs = (weights / weights.sum()).tolist()
    body: dict[str, Any] = {
        "round": draw(st.integers(1, 2**63 - 1)),
        "bid": draw(st.one_of(st.floats(0, 1e12), st.integers(0, 10**6))),
        "distribution": {"tokens": tokens, "probs": draw(st.sampled_from([probs, np.array(probs).tobytes()]))},
    }
    for key, values in (
        ("id", st.integers(0, 2**63 - 1)),
        ("market", st.from_regex(r"[a-z0-9_.-]{1,64}", fullmatch=True)),
    ):
        if draw(st.booleans()):
            body[key] = draw(values)
    return body


@st.composite
def mutated_bids(draw: st.DrawFn) -> dict[str, Any]:
    """A valid bid with one part replaced by anything at all."""
    body = draw(valid_bids())
    where = draw(st.sampled_from(["round", "bid", "id", "re", "market", "distribution", "tokens", "probs", "token"]))
    if where in ("tokens", "probs"):
        body["distribution"] = {
            **body["distribution"],
            where: draw(st.one_of(anything, st.lists(anything, max_size=4))),
        }
    elif where == "token":
        tokens = list(body["distribution"]["tokens"])
        tokens[0] = draw(anything)
        body["distribution"] = {**body["distribution"], "tokens": tokens}
    else:
        body[where] = draw(anything)
    return body


def both_decoders(body: dict[str, Any] | bytes) -> tuple[SealedBid | None, SealedBid | None]:
    """The hot path's reading of a bid (None: it left the bid to the model) and the model's."""
    data = body if isinstance(body, bytes) else msgpack.packb({"v": 1, "type": "sealed_bid", **body}, use_bin_type=True)
    try:
        model: SealedBid | None = SealedBid.model_validate(
            unpack_map(data), context={"max_support": DEFAULT_MAX_SUPPORT}
        )
    except (ValueError, ProtocolError):
        model = None
    wire = read_hot(data)
    return checked_bid(wire, DEFAULT_MAX_SUPPORT) if isinstance(wire, WireBid) else None, model


def same_bid(a: SealedBid, b: SealedBid) -> bool:
    return (
        (a.id, a.re, a.round, a.bid, a.market, a.distribution.tokens)
        == (b.id, b.re, b.round, b.bid, b.market, b.distribution.tokens)
        and np.array_equal(a.distribution.probs, b.distribution.probs)
        and type(a.bid) is float
    )


@settings(max_examples=400, deadline=None)
@given(body=valid_bids())
def test_every_well_formed_bid_takes_the_fast_path_and_equals_the_model(body: dict[str, Any]) -> None:
    fast, model = both_decoders(body)
    assert fast is not None and model is not None and same_bid(fast, model)


@settings(max_examples=1500, deadline=None)
@given(body=st.one_of(mutated_bids(), st.dictionaries(st.sampled_from(["round", "bid", "distribution"]), anything)))
def test_the_fast_path_accepts_nothing_the_model_refuses(body: dict[str, Any]) -> None:
    fast, model = both_decoders(body)
    if fast is not None:
        assert model is not None and same_bid(fast, model)


def raw_map(*pairs: Any) -> bytes:
    """A msgpack map written pair by pair: repeated keys and odd encodings a dict cannot express."""
    packer = msgpack.Packer(use_bin_type=True)
    return packer.pack_map_header(len(pairs) // 2) + b"".join(packer.pack(item) for item in pairs)


BID_PAIRS = ("v", 1, "type", "sealed_bid", "round", 1, "bid", 1.0, "distribution", {"tokens": ["a"], "probs": [1.0]})


def bid_map(**changes: Any) -> dict[str, Any]:
    return {**dict(zip(BID_PAIRS[::2], BID_PAIRS[1::2], strict=True)), **changes}


@pytest.mark.parametrize(
    ("case", "data", "hot"),
    [
        ("a repeated key: the last one counts", raw_map(*BID_PAIRS, "round", 7), True),
        ("float32 numbers", msgpack.packb(bid_map(), use_single_float=True), True),
        ("an unknown field of an ext type", raw_map(*BID_PAIRS, "x", msgpack.ExtType(1, b"z")), True),
        (
            "probs as an old-style raw string",
            msgpack.packb(bid_map(distribution={"tokens": ["a"], "probs": b"\0" * 8})),
            False,
        ),
        ("trailing bytes", raw_map(*BID_PAIRS) + b"\x00", False),
        ("a market id with a newline", raw_map(*BID_PAIRS, "market", "m1\n"), False),
        ("a bool for a bid", raw_map(*BID_PAIRS, "bid", True), False),
        ("another protocol version", raw_map(*BID_PAIRS, "v", 2), False),
        (
            "a token of 65 characters (valid: the model decides)",
            msgpack.packb(bid_map(distribution={"tokens": ["t" * 65], "probs": [1.0]})),
            False,
        ),
    ],
)
def test_odd_encodings_decode_as_the_model_says(case: str, data: bytes, hot: bool) -> None:
    fast, model = both_decoders(data)
    assert (fast is not None) == hot, case
    if fast is not None:
        assert model is not None and same_bid(fast, model), case
    if case.startswith("a repeated key"):
        assert fast is not None and fast.round == 7
    if case.startswith("a token of 65"):
        decoded = decode(data)  # the general path takes what the hot path leaves
        assert model is not None and isinstance(decoded, SealedBid) and same_bid(decoded, model)


def test_an_invalid_utf8_token_is_refused_by_both_paths() -> None:
    bad = msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass")
    data = bad.pack(
        {"v": 1, "type": "sealed_bid", "round": 1, "bid": 1.0, "distribution": {"tokens": ["\udcff"], "probs": [1.0]}}
    )
    assert both_decoders(data) == (None, None)
    with pytest.raises(ProtocolError) as refusal:
        decode(data)
    assert refusal.value.code == ErrorCode.MALFORMED


@settings(max_examples=300, deadline=None)
@given(request_id=st.one_of(st.none(), st.integers(-1, 2**64 - 1)), re_id=st.one_of(st.none(), anything))
def test_a_ping_decodes_as_the_model_says(request_id: int | None, re_id: Any) -> None:
    data = msgpack.packb({"v": 1, "type": "ping", "id": request_id, "re": re_id}, use_bin_type=True)
    wire = read_hot(data)
    try:
        model: Ping | None = Ping.model_validate(unpack_map(data))
    except ValueError:
        model = None
    if isinstance(wire, WirePing):
        assert model is not None and (wire.id, wire.re) == (model.id, model.re)
    decoded = decode(data) if model is not None else None
    assert decoded == model


@given(body=valid_bids())
def test_assembling_a_checked_bid_equals_model_construct(body: dict[str, Any]) -> None:
    fast, model = both_decoders(body)
    assert fast is not None and model is not None
    constructed = SealedBid.model_construct(**fast.__dict__)
    assert fast.__dict__ == constructed.__dict__
    assert fast.model_fields_set == constructed.model_fields_set
    assert (fast.__pydantic_extra__, fast.__pydantic_private__) == (
        constructed.__pydantic_extra__,
        constructed.__pydantic_private__,
    )
    assert list(fast.__dict__) == list(SealedBid.model_fields)
    assert encode(fast) == encode(model)


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: m.type)
def test_assembling_any_message_equals_model_construct(message: Message) -> None:
    assembled = assemble(type(message), **message.__dict__)
    constructed = type(message).model_construct(**message.__dict__)
    assert assembled == constructed == message
    assert assembled.model_fields_set == constructed.model_fields_set
    assert encode(assembled) == encode(constructed)


@pytest.mark.parametrize("kind", ["sealed_bid", "ping"])
def test_a_receiver_that_does_not_take_a_hot_message_refuses_it(kind: str) -> None:
    body = dict(zip(BID_PAIRS[::2], BID_PAIRS[1::2], strict=True)) if kind == "sealed_bid" else {"v": 1}
    data = msgpack.packb({**body, "type": kind, "id": 4}, use_bin_type=True)
    assert decode(data).type == kind
    with pytest.raises(ProtocolError) as refusal:
        decode(data, accepted={"hello"})
    assert (refusal.value.code, refusal.value.request_id) == (ErrorCode.UNKNOWN_TYPE, 4)


def test_a_bid_refused_by_the_precheck_names_its_request() -> None:
    def closed(fields: Any) -> None:
        assert (fields["round"], fields["bid"], fields["market"]) == (1, 1.0, None)
        raise ProtocolError(ErrorCode.ROUND_CLOSED, "round 1 is closed", "round")

    data = raw_map(*BID_PAIRS, "id", 9)
    with pytest.raises(ProtocolError) as refusal:
        decode(data, precheck_bid=closed)
    assert (refusal.value.code, refusal.value.request_id, refusal.value.request_type) == (
        ErrorCode.ROUND_CLOSED,
        9,
        "sealed_bid",
    )


def test_a_refusal_is_the_error_the_model_would_build() -> None:
    error = ProtocolError(ErrorCode.DUPLICATE_BID, "you already bid in round 3", "round")
    built = Error(code=ErrorCode.DUPLICATE_BID, message="you already bid in round 3", field="round", re=7)
    assert refusal(error, 7) == built
    assert encode(refusal(error, 7)) == encode(built)
    assert type(refusal(error, None).code) is str


plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=True) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(value=plain_values)
def test_pack_gives_the_bytes_msgpack_gives(value: Any) -> None:
    assert pack(value) == msgpack.packb(value, use_bin_type=True)


def test_pack_takes_numpy_floats_as_plain_floats() -> None:
    value = {"payments": {"a": np.float64(0.25)}, "tokens": (" a", " b")}
    assert pack(value) == msgpack.packb({"payments": {"a": 0.25}, "tokens": [" a", " b"]}, use_bin_type=True)
    with pytest.raises(TypeError):
        pack({"x": object()})


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: m.type)
def test_every_message_encodes_as_msgpack_packs_its_map(message: Message) -> None:
    data = encode(message)
    assert msgpack.packb(msgpack.unpackb(data, raw=False), use_bin_type=True) == data


IDLE_RESULT = RoundResult(
    seq=3, round=2, token=None, text="t", distribution=None, bids={}, payments={}, balances={}, seed="cd" * 32,
    seed_commitment=COMMIT,
)  # fmt: skip


@pytest.mark.parametrize("message", [*EVERY_MESSAGE, IDLE_RESULT], ids=lambda m: m.type)
def test_every_message_encodes_as_pydantic_dumps_it(message: Message) -> None:
    """Messages of plain fields and distributions are mapped from their attributes, not by pydantic's
    serialiser: the bytes are the same."""
    fields = type(message).model_fields
    nil_left_out = {k for k, f in fields.items() if not f.is_required() and f.default is None}
    body = {k: v for k, v in message.model_dump(mode="python").items() if v is not None or k not in nil_left_out}
    assert encode(message) == msgpack.packb({**body, "v": 1}, use_bin_type=True)


def test_an_assembled_result_encodes_as_the_validated_one() -> None:
    assembled = assemble(RoundResult, **RESULT.__dict__)
    assert encode(assembled) == encode(RESULT)


# What becomes of the last of n equal probabilities, and the refusal it brings.
LAST_PROBABILITY: dict[str, tuple[Callable[[float], float], str | None]] = {
    "kept": (lambda p: p, None),
    "nan": (lambda p: math.nan, "finite"),
    "infinite": (lambda p: math.inf, "finite"),
    "minus infinite": (lambda p: -math.inf, "finite"),
    "negative": (lambda p: -1e-3, "negative"),
    "2e-6 more": (lambda p: p + 2e-6, "sum to"),
}


@pytest.mark.parametrize("size", [1, SMALL_SUPPORT, SMALL_SUPPORT + 1, 1000])
@pytest.mark.parametrize("last", LAST_PROBABILITY)
def test_probabilities_are_checked_alike_at_every_size(size: int, last: str) -> None:
    """Small supports are summed by Python and large ones by numpy: the same refusals either way."""
    change, message = LAST_PROBABILITY[last]
    probs = np.full(size, 1.0 / size)
    probs[-1] = change(probs[-1])
    if message is None:
        check_probabilities(probs)
    else:
        with pytest.raises(ValueError, match=message):
            check_probabilities(probs)

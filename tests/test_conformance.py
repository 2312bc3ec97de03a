"""The conformance kit (``protocol/conformance/``) replayed through our own client's checks: the JSON
twin, the schema, the order of every market's feed, and every result's verification and charges."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import msgpack
import pytest

from agent_client.verify import OwnBid, result_problems
from protocol import LIMITS, decode
from protocol.market_rules import MarketRules
from protocol.messages import MarketInfo, RoundOpen, RoundResult, SyncReply
from protocol.schema import frame_schema, json_value, protocol_schema

KIT = Path(__file__).parent.parent / "protocol" / "conformance"


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return list(msgpack.unpackb((KIT / "session.msgpack").read_bytes()))


def messages(records: list[dict[str, Any]], direction: str) -> list[tuple[dict[str, Any], Any]]:
    return [(r, decode(r["frame"], LIMITS.from_auctioneer)) for r in records if r["direction"] == direction]


def test_the_json_twin_and_the_schema_say_what_the_frames_say(records: list[dict[str, Any]]) -> None:
    twin = json.loads((KIT / "session.json").read_text())
    schema = protocol_schema()
    assert len(twin) == len(records)
    for record, readable in zip(records, twin, strict=True):
        message = json_value(msgpack.unpackb(record["frame"]))
        assert readable["message"] == message and readable["n"] == record["n"]
        jsonschema.validate(message, frame_schema(schema, message["type"]))


def test_every_market_feed_is_in_order_across_the_restart(records: list[dict[str, Any]]) -> None:
    last: dict[str, int] = {}
    resumed = 0
    for record, message in messages(records, "broadcast"):
        if record["topic"] == "x":
            if message.type != "exchange_heartbeat":
                assert message.seq == last.get("x", message.seq - 1) + 1
            last["x"] = message.seq
            continue
        market = record["topic"].removeprefix("m.")
        assert message.market == market
        if message.type == "heartbeat":
            assert message.seq <= last.get(market, 0)
            continue
        # +1; or, for the first broadcast after the restart (resumed), +2 where the client did not
        # see the round_open the stopped auctioneer announced (here it did: +1).
        flagged = getattr(message, "resumed", None) is True
        resumed += flagged
        steps = (1, 2) if flagged else (1,)
        assert message.seq - last.get(market, 0) in steps, (market, message)
        last[market] = message.seq
    assert resumed == 2  # each market's first broadcast after the restart


def test_every_result_verifies_and_every_charge_is_the_expected_one(records: list[dict[str, Any]]) -> None:
    expected = {entry["record"]: entry for entry in json.loads((KIT / "expected.json").read_text())}
    rules: dict[str, MarketRules] = {}
    announced: dict[tuple[str, int], str] = {}  # (market, seq) -> its seed commitment
    bids: dict[tuple[str, str, int], OwnBid] = {}  # (agent, market, round) -> its latest bid
    checked = 0
    for record in records:
        message = msgpack.unpackb(record["frame"])
        if record["direction"] == "reply" and message["type"] == "market_status":
            info = MarketInfo.model_validate(message["status"]["market"])
            rules[info.id] = info.rules
        elif record["direction"] == "request" and message["type"] == "sealed_bid":
            distribution = message["distribution"]
            own = dict(zip(distribution["tokens"], distribution["probs"], strict=True))
            bids[(record["peer"], message["market"], message["round"])] = OwnBid(record["peer"], own, message["bid"])
        elif record["direction"] == "broadcast":
            decoded = decode(record["frame"], LIMITS.from_auctioneer)
            if isinstance(decoded, RoundOpen):
                announced[(decoded.market or "", decoded.seq)] = decoded.seed_commitment
            elif isinstance(decoded, RoundResult):
                market = decoded.market or ""
                commitment = announced[(market, decoded.seq - 1)]
                weight = decoded.reference_weight or 0.0
                for agent in decoded.bids:
                    own = bids[(agent, market, decoded.round)]
                    assert result_problems(decoded, commitment, rules[market], own, weight) == []
                entry = expected[record["n"]]
                assert (entry["token"], entry["round"], entry["reference_weight"]) == (
                    decoded.token, decoded.round, weight
                )  # fmt: skip
                assert entry["payments"] == pytest.approx(decoded.payments)
                assert entry["charges"] == pytest.approx(decoded.payments, abs=1e-9)
                checked += 1
    assert checked == len(expected) == 7
    assert any(charge > 0 for entry in expected.values() for charge in entry["charges"].values())


def test_the_resync_replays_the_results_byte_for_byte(records: list[dict[str, Any]]) -> None:
    broadcast = defaultdict(list)
    for record in records:
        if record["direction"] == "broadcast" and msgpack.unpackb(record["frame"])["type"] == "round_result":
            broadcast[record["topic"]].append(msgpack.unpackb(record["frame"]))
    (sync,) = [m for _, m in messages(records, "reply") if isinstance(m, SyncReply)]
    raw = next(msgpack.unpackb(r["frame"]) for r in records if msgpack.unpackb(r["frame"])["type"] == "sync_reply")
    assert raw["results"] == broadcast[f"m.{sync.market}"]
    assert sync.tokens == [result["token"] for result in raw["results"] if result["token"] is not None]
    assert sync.text == sync.prompt + "".join(sync.tokens)

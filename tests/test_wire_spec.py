"""SPEC revision 1.7 on the wire: raw DEALER and SUB sockets and msgpack maps built by hand (none of
our client code), against a real exchange process. One test per point an outside client author
raised, the machine-readable schema checked against live traffic, and the names the docs use
checked against the code."""

from __future__ import annotations

import ast
import re
import signal
import struct
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import zmq

from protocol.errors import ErrorCode
from protocol.messages import MESSAGE_TYPES
from protocol.schema import SCHEMA_PATH, definition_of, frame_schema, json_value, protocol_schema, schema_text
from protocol.topics import EXCHANGE_TOPIC
from tests.helpers import MarketRun, WireClient, WireFeed, stopped_within

ROOT = Path(__file__).parent.parent


def bid(round_number: int, market: str, amount: float, **distribution: float) -> dict[str, Any]:
    return {
        "round": round_number,
        "market": market,
        "bid": amount,
        "distribution": {"tokens": list(distribution), "probs": list(distribution.values())},
    }


def probabilities(distribution: dict[str, Any]) -> dict[str, float]:
    """A distribution map as token -> probability (``probs`` as floats, or a bin of float64 LE)."""
    probs = distribution["probs"]
    if isinstance(probs, bytes):
        probs = list(struct.unpack(f"<{len(probs) // 8}d", probs))
    return dict(zip(distribution["tokens"], probs, strict=True))


def opened(feed: WireFeed, market: str) -> dict[str, Any]:
    return feed.next(lambda topic, m: m["type"] == "round_open" and m.get("market") == market)


def result(feed: WireFeed, market: str) -> dict[str, Any]:
    return feed.next(lambda topic, m: m["type"] == "round_result" and m.get("market") == market)


@pytest.fixture
def exchange(market_run: MarketRun) -> MarketRun:
    """An exchange that opens no market at start, once it answers requests."""
    market_run.serve("--stay", default_market=False)
    client = WireClient(market_run.market)
    try:
        assert client.request("list_markets", timeout=30)["type"] == "market_list"
    finally:
        client.close()
    return market_run


def operator(run: MarketRun) -> WireClient:
    return WireClient(run.market)


def open_market(client: WireClient, market: str, **fields: Any) -> dict[str, Any]:
    return client.request("open_market", market=market, **fields)


# --- the seven points -----------------------------------------------------------------------------


def test_market_ended_is_an_exchange_notice_on_x_with_the_exchanges_seq(exchange: MarketRun) -> None:
    notices, client = WireFeed(exchange.feed, "x"), operator(exchange)
    notices.next(lambda topic, m: m["type"] == "exchange_heartbeat")  # the subscription is in place
    assert open_market(client, "q1", settings={"prompt": "Q:", "max_tokens": 5})["type"] == "market_status"
    market_feed = WireFeed(exchange.feed, "m.q1")  # (a market's topic is taken once the market exists)
    try:
        first = notices.next(lambda topic, m: m["type"] == "market_opened")
        time.sleep(0.3)
        assert client.request("close_market", market="q1")["type"] == "market_status"
        ended = notices.next(lambda topic, m: m["type"] == "market_ended")
        assert ended["market"] == "q1" and ended["reason"] == "operator" and ended["seq"] == first["seq"] + 1
        closed = market_feed.next(lambda topic, m: m["type"] == "market_closed")
        assert closed["market"] == "q1"
        time.sleep(0.5)
        while market_feed.socket.poll(0):  # everything else the market's topic brought
            market_feed.next(lambda topic, m: True, timeout=0.1)
        assert all(m["type"] != "market_ended" for _, m in market_feed.seen)  # not on the market's topic
        assert all(topic == "x" for topic, _ in notices.seen)
    finally:
        for sock in (notices, market_feed, client):
            sock.close()


def test_each_market_states_its_own_mechanism_in_its_market_info(exchange: MarketRun) -> None:
    client = operator(exchange)
    try:
        open_market(client, "a", settings={"prompt": "A:", "payment": "second_price", "reference_weight": 0.0})
        open_market(
            client,
            "b",
            settings={"prompt": "B:", "payment": "critical_bid", "mode": "stable", "reference_weight": 2.5},
            reference_agent="pub",
        )
        welcome = client.request("hello", name="reader")
        rules = {info["id"]: info["rules"] for info in welcome["markets"]}
        assert (rules["a"]["payment"], rules["a"]["mode"], rules["a"]["reference_weight"]) == (
            "second_price",
            "sample",
            0.0,
        )
        assert (rules["b"]["payment"], rules["b"]["mode"], rules["b"]["reference_weight"]) == (
            "critical_bid",
            "stable",
            2.5,
        )
        assert "mechanism" not in welcome  # no default market: nothing but each market_info says it
    finally:
        client.close()


def test_a_reference_weight_with_nothing_to_weigh_is_refused(exchange: MarketRun) -> None:
    client = operator(exchange)
    try:
        refused = open_market(client, "w", settings={"prompt": "", "reference_weight": 2.0})
        assert (refused["type"], refused["code"], refused["field"]) == ("error", "INVALID_SETTINGS", "reference_weight")
        fixed = open_market(client, "w", settings={"prompt": "", "reference_weight": 2.0, "reference": {"x": 1.0}})
        with_agent = open_market(client, "w2", settings={"prompt": "", "reference_weight": 2.0}, reference_agent="pub")
        assert fixed["type"] == with_agent["type"] == "market_status"
    finally:
        client.close()


def test_the_reference_agent_is_in_b_and_the_worked_example_holds(exchange: MarketRun) -> None:
    """SPEC 4.2's worked example: the advertiser pays 3, the reference's weight, recomputed by hand."""
    client, publisher, advertiser = operator(exchange), WireClient(exchange.market), WireClient(exchange.market)
    feed = WireFeed(exchange.feed, "x")
    try:
        settings = {
            "prompt": "Q:", "payment": "critical_bid", "mode": "greedy", "aggregation": "linear",
            "reference_weight": 3.0, "max_tokens": 1, "min_agents": 2, "round_timeout": 30.0,
        }  # fmt: skip
        assert open_market(client, "ref", settings=settings, reference_agent="publisher")["type"] == "market_status"
        feed.socket.setsockopt(zmq.SUBSCRIBE, b"\xc1m.ref\n")
        time.sleep(0.3)
        publisher.request("hello", name="publisher")
        advertiser.request("hello", name="advertiser")
        number = opened(feed, "ref")["round"]
        assert publisher.request("sealed_bid", **bid(number, "ref", 77.0, news=1.0))["type"] == "bid_accepted"
        assert advertiser.request("sealed_bid", **bid(number, "ref", 4.0, ad=1.0))["type"] == "bid_accepted"
        outcome = result(feed, "ref")
        assert outcome["bids"] == {"advertiser": 4.0} and "publisher" not in outcome["payments"]
        assert outcome["reference_weight"] == 3.0 and outcome["token"] == "ad"
        q = probabilities(outcome["distribution"])
        assert q == pytest.approx({"ad": 4 / 7, "news": 3 / 7})
        total, own = sum(outcome["bids"].values()) + outcome["reference_weight"], {"ad": 1.0}
        a = {t: total * q[t] - 4.0 * own.get(t, 0.0) for t in q}  # greedy: ln E_t = 0
        c = {t: own.get(t, 0.0) for t in q}
        charge = max(0.0, *((a[t] - a["ad"]) / (c["ad"] - c[t]) for t in q if c[t] < c["ad"]))
        assert charge == pytest.approx(3.0) and outcome["payments"]["advertiser"] == pytest.approx(charge)
        assert outcome["sponsors"] == {"advertiser": 1.0}
    finally:
        for sock in (client, publisher, advertiser, feed):
            sock.close()


def test_the_first_broadcast_after_a_restart_says_it_skips_one_seq(exchange: MarketRun) -> None:
    client, agent = operator(exchange), WireClient(exchange.market)
    settings = {"prompt": "R:", "max_tokens": 50, "round_timeout": 30.0}
    open_market(client, "r", settings=settings)
    feed = WireFeed(exchange.feed, "m.r")
    try:
        time.sleep(0.3)
        resume = agent.request("hello", name="steady")["resume"]
        first = opened(feed, "r")
        assert agent.request("sealed_bid", **bid(first["round"], "r", 1.0, w=1.0))["type"] == "bid_accepted"
        committed = result(feed, "r")
        announced = opened(feed, "r")  # round 2 is open, never to be committed by this process
        assert "resumed" not in announced and announced["seq"] == committed["seq"] + 1
        exchange.processes[0].send_signal(signal.SIGTERM)
        assert stopped_within(exchange.processes[0], 20) == 0, exchange.logs()
        before_restart = len(feed.seen)
        exchange.serve("--stay", default_market=False)
        feed.next(lambda topic, m: m["type"] == "heartbeat", timeout=30)  # the feed reconnected: nothing is missed
        assert agent.request("hello", name="steady", resume=resume, timeout=20)["type"] == "welcome"
        reopened = opened(feed, "r")
        # The reopened round 2: its seq skips the one its first announcement took, and says so.
        assert reopened["round"] == announced["round"] and reopened["resumed"] is True
        assert reopened["seq"] == committed["seq"] + 2
        feed.next(lambda topic, m: m["type"] == "heartbeat")
        beats = [m["seq"] for _, m in feed.seen[before_restart:] if m["type"] == "heartbeat"]
        assert beats and set(beats) <= {committed["seq"], reopened["seq"]}  # never the skipped seq
    finally:
        for sock in (client, agent, feed):
            sock.close()


def test_a_request_wrong_in_several_ways_gets_the_first_code_of_spec_5_1(exchange: MarketRun) -> None:
    client, agent, stranger = operator(exchange), WireClient(exchange.market), WireClient(exchange.market)
    idle = WireClient(exchange.market)
    for market, agents in (("only", ["someone"]), ("open", None)):
        settings = {"prompt": "", "round_timeout": 30.0, "max_tokens": 5}
        open_market(client, market, settings=settings, agents=agents)
    feed = WireFeed(exchange.feed, "m.open")
    try:
        time.sleep(0.3)
        client.request("set_budget", agent="spender", budget=1.0)
        idle.request("hello", name="idle")  # never bids: round 1 waits for it
        agent.request("hello", name="spender")
        number = opened(feed, "open")["round"]

        def code(peer: WireClient, **fields: Any) -> str:
            reply = peer.request("sealed_bid", **fields)
            return str(reply.get("code", reply["type"]))

        over = 5.0  # over the budget of 1
        assert code(stranger, **bid(1, "nowhere", over, x=1.0)) == "NOT_REGISTERED"
        assert code(agent, **bid(1, "nowhere", over, x=1.0)) == "UNKNOWN_MARKET"
        assert code(agent, **bid(number + 5, "only", over, x=1.0)) == "NOT_INVITED"
        assert code(agent, **bid(number + 5, "open", over, x=1.0)) == "WRONG_ROUND"
        bad = {**bid(number, "open", over, x=1.0), "distribution": {"tokens": ["x"], "probs": [0.5]}}
        assert code(agent, **bad) == "INVALID_DISTRIBUTION"
        assert code(agent, **bid(number, "open", over, x=1.0)) == "BUDGET_EXCEEDED"
        assert code(agent, **bid(number, "open", 0.5, x=1.0)) == "bid_accepted"
        assert code(agent, **bid(number, "open", over, x=1.0)) == "DUPLICATE_BID"
        refused = stranger.request("open_market", settings="x")  # a field of the wrong type, from loopback
        assert refused["code"] == "MALFORMED"
    finally:
        for sock in (client, agent, stranger, idle, feed):
            sock.close()


def test_a_market_limited_to_fewer_agents_than_it_waits_for_is_refused(exchange: MarketRun) -> None:
    client = operator(exchange)
    try:
        refused = open_market(client, "few", settings={"prompt": "", "min_agents": 2}, agents=["solo"])
        assert (refused["code"], refused["field"]) == ("INVALID_SETTINGS", "min_agents")
        accepted = open_market(
            client, "few", settings={"prompt": "", "min_agents": 2}, agents=["solo"], reference_agent="pub"
        )
        assert accepted["type"] == "market_status"  # the reference agent makes two
    finally:
        client.close()


# --- the schema -----------------------------------------------------------------------------------


def test_the_checked_in_schema_is_generated_from_the_models() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), "run python -m protocol.schema"
    schema = protocol_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert {definition_of(kind) for kind in MESSAGE_TYPES} <= set(schema["$defs"])
    assert schema["$defs"]["Error"]["properties"]["code"]["enum"] == [str(code) for code in ErrorCode]


def test_live_traffic_of_every_message_type_matches_the_schema(exchange: MarketRun) -> None:
    client, agent = operator(exchange), WireClient(exchange.market)
    open_market(client, "t", settings={"prompt": "T:", "max_tokens": 1, "round_timeout": 30.0})
    feed = WireFeed(exchange.feed, "")
    try:
        time.sleep(0.3)
        agent.request("hello", name="trader")
        number = opened(feed, "t")["round"]
        agent.request("sealed_bid", **bid(number, "t", 1.0, a=0.5, b=0.5))
        feed.next(lambda topic, m: m["type"] == "market_ended")
        agent.request("ping")
        agent.request("list_markets")
        agent.request("sync_request", market="t", since_seq=0)
        agent.request("sealed_bid", **bid(number, "t", 1.0, a=1.0))  # an error: the market has ended
        client.request("set_budget", agent="trader", budget=10.0)
        open_market(client, "u", settings={"prompt": "U:"})
        feed.next(lambda topic, m: m["type"] == "heartbeat")
        feed.next(lambda topic, m: m["type"] == "exchange_heartbeat")
        client.request("close_market", market="u")
        feed.next(lambda topic, m: m["type"] == "market_closed" and m.get("market") == "u")
    finally:
        for sock in (client, agent, feed):
            sock.close()
    schema = protocol_schema()
    traffic = [*client.sent, *client.received, *agent.sent, *agent.received, *(m for _, m in feed.seen)]
    assert {m["type"] for m in traffic} == set(MESSAGE_TYPES)  # every message type, on both sockets
    root = jsonschema.Draft202012Validator(schema)
    for message in traffic:
        value = json_value(message)
        root.validate(value)
        jsonschema.validate(value, frame_schema(schema, message["type"]))


# --- the names the docs use -----------------------------------------------------------------------

DOCUMENTS = [ROOT / "README.md", ROOT / "protocol" / "SPEC.md", *sorted((ROOT / "docs").glob("*.md"))]
TOPIC_LISTS = re.compile(r"topics?\b[^.`]{0,60}?((?:`[^`]+`[,;]?\s*(?:and\s+|or\s+|for\s+[^`,;)]*[,;]?\s*)?)+)", re.S)
NOT_CODES = {
    "MUST",
    "SHOULD",
    "MAY",
    "NOT",
    "REQ",
    "MORE",
    "HWM",
    "UTF",
    "JSON",
    "SQL",
    "WAL",
    "CPU",
    "RSS",
    "TV",
    "KL",
}


def code_names() -> set[str]:
    """Every identifier, attribute and string constant in the project's Python code."""
    names: set[str] = set()
    for folder in ("protocol", "auctioneer", "agent_client", "simulation", "dashboard", "cli", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Name | ast.arg):
                    names.add(node.id if isinstance(node, ast.Name) else node.arg)
                elif isinstance(node, ast.Attribute):
                    names.add(node.attr)
                elif isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
                    names.add(node.name)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", node.value))
    return names


def test_every_topic_message_type_and_error_code_the_docs_name_exists() -> None:
    known, codes = code_names(), {str(code) for code in ErrorCode}
    wire_words = {EXCHANGE_TOPIC.decode(), *MESSAGE_TYPES, *(f for m in MESSAGE_TYPES.values() for f in m.model_fields)}
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        quoted = re.findall(r"`([^`\n]+)`", text)
        for word in quoted:
            if re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+|[A-Z]{4,}", word) and word not in NOT_CODES:
                assert word in codes or hasattr(zmq, word) or word in known, (
                    f"{document.name} names {word!r}: no such code"
                )
            elif re.fullmatch(r"[a-z]+(_[a-z]+)+", word):  # (figure keys, with digits, are built at run time)
                stem = re.sub(r"_(total|bucket|count|sum|created)$", "", word)  # Prometheus adds these
                assert word in known or stem in known, f"{document.name} names {word!r}, which the code does not know"
        for listing in TOPIC_LISTS.finditer(text):  # the backticked names right after "topic(s)"
            for word in re.findall(r"`([^`]+)`", listing.group(1)):
                if " " in word or word.endswith((".py", ".md")):
                    continue
                if re.match(r"m[./<]", word):
                    assert word.startswith("m."), f"{document.name} names the topic {word!r}"
                elif re.fullmatch(r"[a-z_]+", word):
                    assert word in wire_words, f"{document.name} names {word!r} as a topic or message"

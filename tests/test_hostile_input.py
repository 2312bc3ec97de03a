"""Hostile input over the market socket, sent raw while honest agents bid in the same rounds."""

from __future__ import annotations

import math
import time

import msgpack

from protocol import decode, encode
from protocol.messages import BidAccepted, Error, Hello, Ping, SealedBid, Welcome
from tests.helpers import BID, MarketRun, RawPeer, open_round, read_ledger, run_cli, static_agent, wait_until
from tests.hostile_corpus import DROPPED, corpus

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
BID_MAP = {"tokens": ["x"], "probs": [1.0]}


def test_every_hostile_message_gets_its_code_and_changes_nothing(market_run: MarketRun) -> None:
    market_run.serve("--min-agents", "4", "--max-tokens", "6", "--round-timeout", "1.5", "--heartbeat", "5")
    market_run.agent("honest1", *static_agent("a=0.6,b=0.4", 1))
    market_run.agent("honest2", *static_agent("b=1", 2))
    mallory = RawPeer(market_run.market)
    unregistered = RawPeer(market_run.market)
    silent = RawPeer(market_run.market)  # registered, never bids: no round closes before its deadline
    try:
        assert isinstance(silent.request(Hello(name="silent")), Welcome)
        assert isinstance(mallory.request(Hello(name="mallory")), Welcome)
        first = open_round(mallory)
        legit = encode(SealedBid(round=first.round, distribution=BID, bid=0.25))
        mallory.send(legit)
        assert isinstance(mallory.receive(), BidAccepted)
        wait_until(lambda: open_round(mallory).round > first.round, what="the next round")
        current = open_round(mallory).round
        entries = corpus(current, first.round, "honest1", MAX_MESSAGE_BYTES)
        assert len(entries) >= 40
        outcomes = {}
        for label, frames, expected in entries:
            if expected == DROPPED:
                continue
            mallory.send(*frames)
            reply = mallory.receive()
            assert isinstance(reply, Error), label
            outcomes[label] = reply.code
        duplicate_setup = mallory.request(SealedBid(round=current, distribution=BID, bid=0.5))
        duplicate = mallory.request(SealedBid(round=current, distribution=BID, bid=0.5))
        replayed = mallory.request(decode(legit))
        assert isinstance(duplicate_setup, BidAccepted)
        assert isinstance(duplicate, Error) and duplicate.code == "DUPLICATE_BID"
        assert isinstance(replayed, Error) and replayed.code == "ROUND_CLOSED"
        assert unregistered.request(SealedBid(round=current, distribution=BID, bid=1.0)).code == "NOT_REGISTERED"
        assert unregistered.request(Ping()).code == "NOT_REGISTERED"
        # impersonation: an honest agent's name without its resume secret
        assert unregistered.request(Hello(name="honest1")).code == "NAME_TAKEN"
        # a refusal names the request it answers, even when the request was refused while decoding
        for refused in (
            {"v": 2, "type": "ping", "id": 71},
            {"v": 1, "type": "steal_funds", "id": 72},
            {"v": 1, "type": "sealed_bid", "round": current, "bid": math.nan, "distribution": BID_MAP, "id": 73},
            {"v": 1, "type": "sealed_bid", "round": "1", "bid": 1.0, "distribution": BID_MAP, "id": 74},
        ):
            mallory.send(msgpack.packb(refused))
            reply = mallory.receive()
            assert isinstance(reply, Error) and reply.re == refused["id"], refused
        # The oversized frame: the transport drops the connection; nothing answers it.
        oversized = next(frames for _, frames, expected in entries if expected == DROPPED)
        mallory.send(*oversized)
        assert not mallory.socket.poll(1000)
        expected_codes = {label: expected for label, _, expected in entries if expected != DROPPED}
        assert outcomes == expected_codes
    finally:
        mallory.close()
        unregistered.close()
        silent.close()
    assert market_run.wait(90) == [0, 0, 0], market_run.logs()
    ledger = read_ledger(market_run.db)
    assert [r["round"] for r in ledger["rounds"]] == list(range(1, len(ledger["rounds"]) + 1))
    assert all({"honest1", "honest2"} <= set(r["bids"]) for r in ledger["rounds"])
    mallory_bids = {r["round"]: r["bids"]["mallory"]["bid"] for r in ledger["rounds"] if "mallory" in r["bids"]}
    assert mallory_bids == {first.round: 0.25, current: 0.5}
    assert run_cli("-m", "auctioneer", "audit", "--db", str(market_run.db)).returncode == 0


def test_the_auctioneer_still_serves_after_a_dropped_connection(market_run: MarketRun) -> None:
    (market_run.directory / "c.toml").write_text("max_message_bytes = 2048\n")
    market_run.serve(
        "--prompt", "", "--min-agents", "1", "--max-tokens", "2", "--config", str(market_run.directory / "c.toml")
    )
    time.sleep(0.2)
    flooder = RawPeer(market_run.market)
    try:
        flooder.send(b"\x00" * 4096)
        assert not flooder.socket.poll(500)
    finally:
        flooder.close()
    market_run.agent("honest", *static_agent("z=1", 1))
    assert market_run.wait(60) == [0, 0], market_run.logs()
    assert read_ledger(market_run.db)["text"] == "zz"

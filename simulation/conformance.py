"""Recording the conformance kit (``protocol/conformance/``): one short exchange session, every frame.

A real exchange process on loopback; the recorder itself is the operator and three agents, speaking
raw msgpack over its own DEALER and SUB sockets, so every request, reply and feed frame of the
session is captured as it was on the wire. The session: two markets (``crit``: ``critical_bid`` with
the ``stable`` draw and a reference agent; ``second``: ``second_price`` with a fixed reference and
the ``sample`` draw), rounds bid by fixed distributions, an auctioneer restart in the middle of
``crit`` (its open round is opened again, the first broadcast after it ``resumed``), and a resync
(``sync_request`` from seq 0). Then it writes the transcript (``session.msgpack``, its JSON twin
``session.json``) and what a client must compute from it (``expected.json``: each result's token,
aggregate, charges and sponsor shares, as ``agent_client.verify`` recomputes them).

``python -m simulation.conformance --out protocol/conformance`` writes the kit again.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from agent_client.verify import OwnBid, PublishedRound, expected_charge
from protocol import LIMITS, decode
from protocol.market_rules import MechanismSettings
from protocol.messages import RoundResult
from protocol.schema import json_value
from simulation.processes import LocalMarket

SEED = "c0" * 32
MARKETS: dict[str, dict[str, Any]] = {
    "crit": {
        "settings": {
            "prompt": "Vacations in", "payment": "critical_bid", "mode": "stable", "aggregation": "linear",
            "reference_weight": 1.0, "max_tokens": 4, "min_agents": 3, "round_timeout": 30.0, "seed": SEED,
        },
        "reference_agent": "publisher",
    },
    "second": {
        "settings": {
            "prompt": "Flights to", "payment": "second_price", "mode": "sample", "aggregation": "linear",
            "reference": {" Paris": 0.5, " Rome": 0.5}, "reference_weight": 0.5, "max_tokens": 3,
            "min_agents": 2, "round_timeout": 30.0, "seed": SEED,
        },
        "agents": ["alice", "bob"],
    },
}  # fmt: skip
BIDS: dict[str, dict[str, tuple[float, dict[str, float]]]] = {
    "alice": {"crit": (2.0, {" Hawaii": 0.9, " Bali": 0.1}), "second": (1.0, {" Paris": 0.9, " Rome": 0.1})},
    "bob": {"crit": (1.5, {" Bali": 0.8, " Hawaii": 0.2}), "second": (2.0, {" Rome": 0.6, " Oslo": 0.4})},
    "publisher": {"crit": (0.0, {" Greece": 0.8, " Bali": 0.2})},
}
RESTART_AFTER = 2  # rounds of ``crit`` committed before the auctioneer is restarted


@dataclass
class Recorder:
    """The operator and the agents' sockets, and every frame they sent and received."""

    market: str
    feed: str
    context: zmq.Context[zmq.Socket[bytes]] = field(default_factory=zmq.Context)
    records: list[dict[str, Any]] = field(default_factory=list)
    peers: dict[str, zmq.Socket[bytes]] = field(default_factory=dict)
    resume: dict[str, str] = field(default_factory=dict)
    ids: int = 0

    def __post_init__(self) -> None:
        self.subscriber = self.context.socket(zmq.SUB)
        self.subscriber.setsockopt(zmq.SUBSCRIBE, b"\xc1")  # every topic, not the plain copies
        self.subscriber.connect(self.feed)

    def peer(self, name: str) -> zmq.Socket[bytes]:
        if name not in self.peers:
            sock = self.context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.market)
            self.peers[name] = sock
        return self.peers[name]

    def request(self, peer: str, kind: str, **fields: Any) -> dict[str, Any]:
        self.ids += 1
        frame = msgpack.packb({"v": 1, "type": kind, "id": self.ids, **fields}, use_bin_type=True)
        sock = self.peer(peer)
        self._keep("market", "request", peer, None, frame)
        sock.send(frame)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if sock.poll(100):
                reply = sock.recv()
                self._keep("market", "reply", peer, None, reply)
                message = msgpack.unpackb(reply)
                if message.get("re") == self.ids:
                    return dict(message)
            self.read_feed(0)
        raise TimeoutError(f"no reply to {peer}'s {kind}")

    def read_feed(self, timeout_ms: int) -> list[dict[str, Any]]:
        """The feed messages arrived within ``timeout_ms`` (recorded)."""
        arrived = []
        while self.subscriber.poll(timeout_ms):
            frame = self.subscriber.recv()
            topic, _, payload = frame[1:].partition(b"\n")
            self._keep("feed", "broadcast", None, topic.decode(), payload)
            arrived.append(dict(msgpack.unpackb(payload)))
            timeout_ms = 0
        return arrived

    def _keep(self, socket_name: str, direction: str, peer: str | None, topic: str | None, frame: bytes) -> None:
        self.records.append(
            {"n": len(self.records), "socket": socket_name, "direction": direction, "peer": peer, "topic": topic,
             "frame": frame}
        )  # fmt: skip

    def hello(self, name: str) -> None:
        reply = self.request(name, "hello", name=name, **({"resume": self.resume[name]} if name in self.resume else {}))
        assert reply["type"] == "welcome", reply
        if "resume" in reply:
            self.resume[name] = reply["resume"]

    def close(self) -> None:
        for sock in [*self.peers.values(), self.subscriber]:
            sock.close(linger=0)
        self.context.term()


def trade(recorder: Recorder, open_markets: set[str], stop: Any) -> None:
    """Bid in every round that opens until ``stop()`` says so (every agent its fixed bid)."""
    bid_in: set[tuple[str, int, int]] = set()
    while not stop():
        for message in recorder.read_feed(100):
            if message.get("type") == "market_closed":
                open_markets.discard(message["market"])
            if message.get("type") != "round_open" or (message["market"], message["round"], message["seq"]) in bid_in:
                continue
            bid_in.add((message["market"], message["round"], message["seq"]))
            for name, bids in BIDS.items():
                if message["market"] in bids:
                    amount, distribution = bids[message["market"]]
                    recorder.request(
                        name, "sealed_bid", market=message["market"], round=message["round"], bid=amount,
                        distribution={"tokens": list(distribution), "probs": list(distribution.values())},
                    )  # fmt: skip


def record(scratch: Path) -> list[dict[str, Any]]:
    """Run the session; its records, in the order they were sent and received."""
    exchange = LocalMarket()
    exchange.start_auctioneer(scratch / "ledger.db", ["--stay", "--heartbeat", "0.5"], scratch / "auctioneer.log")
    recorder = Recorder(exchange.market, exchange.feed)
    try:
        while recorder.request("operator", "list_markets")["type"] != "market_list":
            time.sleep(0.1)
        time.sleep(0.5)  # the feed subscription is in place
        for name in BIDS:
            recorder.hello(name)
        for market, spec in MARKETS.items():
            assert recorder.request("operator", "open_market", market=market, **spec)["type"] == "market_status"
        open_markets = set(MARKETS)
        results = {market: 0 for market in MARKETS}

        def crit_far_enough() -> bool:
            results["crit"] = max(results["crit"], committed_rounds(recorder.records, "crit"))
            return results["crit"] >= RESTART_AFTER

        trade(recorder, open_markets, crit_far_enough)
        exchange.processes[0].send_signal(signal.SIGTERM)  # a restart in the middle of ``crit``
        exchange.processes[0].wait(30)
        exchange.start_auctioneer(scratch / "ledger.db", ["--stay", "--heartbeat", "0.5"], scratch / "again.log")
        time.sleep(1.0)
        for name in BIDS:
            recorder.hello(name)  # it forgot their connections: they register again, with their secrets
        trade(recorder, open_markets, lambda: not open_markets)
        recorder.request("alice", "sync_request", market="crit", since_seq=0)  # a resync of everything
        recorder.read_feed(1500)  # the exchange's notices and heartbeats that follow
    finally:
        recorder.close()
        exchange.stop()
    return recorder.records


def committed_rounds(records: list[dict[str, Any]], market: str) -> int:
    return sum(
        1
        for r in records
        if r["direction"] == "broadcast" and (m := msgpack.unpackb(r["frame"]))["type"] == "round_result"
        and m.get("market") == market
    )  # fmt: skip


def expected(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a client computes from each round result of the session (``agent_client.verify``'s rules)."""

    outcomes = []
    for r in records:
        if r["direction"] != "broadcast":
            continue
        result = decode(r["frame"], LIMITS.from_auctioneer)
        if not isinstance(result, RoundResult) or result.distribution is None:
            continue
        charges, shares = {}, {}
        for name in result.bids:
            amount, distribution = BIDS[name][result.market or ""]
            published = PublishedRound.of(result, OwnBid(name, distribution, amount), result.reference_weight or 0.0)
            assert published is not None
            mechanism = MechanismSettings.model_validate(MARKETS[result.market or ""]["settings"])
            charges[name] = expected_charge(published, mechanism, bytes.fromhex(result.seed))
            shares[name] = result.sponsors.get(name, 0.0)
        outcomes.append(
            {
                "record": r["n"], "market": result.market, "round": result.round, "seq": result.seq,
                "token": result.token, "aggregate": result.distribution.as_mapping(), "payments": result.payments,
                "charges": charges, "sponsors": result.sponsors, "reference_weight": result.reference_weight or 0.0,
            }
        )  # fmt: skip
    return outcomes


def write_kit(out: Path, records: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "session.msgpack").write_bytes(msgpack.packb(records, use_bin_type=True))
    twin = [
        {key: value for key, value in r.items() if key != "frame"}
        | {"message": json_value(msgpack.unpackb(r["frame"]))}
        for r in records
    ]
    (out / "session.json").write_text(json.dumps(twin, indent=1) + "\n", encoding="utf-8")
    (out / "expected.json").write_text(json.dumps(expected(records), indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulation.conformance", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("protocol/conformance"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="token-auction-conformance-") as scratch:
        records = record(Path(scratch))
    write_kit(args.out, records)
    print(f"recorded {len(records)} frames into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

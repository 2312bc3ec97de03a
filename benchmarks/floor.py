"""The physical floor: a bare pyzmq server with the auctioneer's socket pattern and message sizes.

ROUTER + PUB, no validation, no mechanism, no ledger: it announces a round with a payload as large
as the real ``round_open``, acknowledges every bid with a reply as large as ``bid_accepted``, and
publishes a result as large as the real ``round_result``. With ``--validate`` it also decodes every
bid through ``protocol.decode`` (the protocol's checks and nothing else of the market), which
measures what validation alone costs. With ``--durable DB`` it is the **durable floor**: every bid
decoded and checked by the compiled decoder (msgspec, ``protocol.hot_path``), and each round's bids
written to an SQLite file in one fsync'd transaction (WAL, ``synchronous=FULL``) before its result
is published: what any durable market must do per round, and nothing else. Run as
``python -m benchmarks.floor``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

import msgpack
import zmq

from protocol import decode
from protocol.codec import pack
from protocol.distribution import DEFAULT_MAX_SUPPORT, probs_bytes
from protocol.hot_path import WireBid, checked_bid, read_hot
from protocol.messages import AGENT_REQUESTS
from protocol.topics import market_topic, topic_frame

TOPIC = market_topic("floor")


class DurableRounds:
    """The durable floor's work: each bid through the compiled decoder, each round's bids in one
    fsync'd SQLite transaction."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE bids (round INTEGER, agent BLOB, bid REAL, tokens BLOB, probs BLOB,"
            " PRIMARY KEY (round, agent))"
        )
        self.rows: list[tuple[int, bytes, float, bytes, bytes]] = []

    def take(self, peer: bytes, data: bytes) -> None:
        hot = read_hot(data)
        bid = checked_bid(hot, DEFAULT_MAX_SUPPORT) if isinstance(hot, WireBid) else None
        if bid is None:
            raise SystemExit("the durable floor got a bid the compiled decoder refused")
        distribution = bid.distribution
        self.rows.append((bid.round, peer, bid.bid, pack(distribution.tokens), probs_bytes(distribution.probs)))

    def commit(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT INTO bids VALUES (?, ?, ?, ?, ?)", self.rows)
        self.db.execute("COMMIT")
        self.rows.clear()


def serve(
    market: str, feed: str, agents: int, rounds: int, result_bytes: int, validate: bool, durable: Path | None = None
) -> None:
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    # XPUB (same wire behaviour as PUB) so the floor can wait for the driver's subscription.
    publisher = context.socket(zmq.XPUB)
    router.bind(market)
    publisher.bind(feed)
    ack = msgpack.packb({"v": 1, "type": "bid_accepted", "round": 1, "re": 1})
    store = DurableRounds(durable) if durable is not None else None
    seq = 0
    # Wait for every agent to say hello (as min_agents does).
    hellos = 0
    publisher.recv()  # the driver's subscription: no round_open is published before it is listening
    while hellos < agents:
        peer, _ = router.recv_multipart()
        router.send_multipart([peer, ack])
        hellos += 1
    for number in range(1, rounds + 1):
        seq += 1
        publisher.send(
            topic_frame(
                TOPIC,
                msgpack.packb(
                    {
                        "v": 1,
                        "type": "round_open",
                        "seq": seq,
                        "round": number,
                        "text": "x" * 40,
                        "seed_commitment": "0" * 64,
                        "deadline": 0.0,
                        "timeout": 10.0,
                    }
                ),
            )
        )
        for _ in range(agents):
            peer, bid = router.recv_multipart()
            if validate:
                decode(bid, accepted=AGENT_REQUESTS)
            elif store is not None:
                store.take(peer, bid)
            router.send_multipart([peer, ack])
        if store is not None:
            store.commit()
        seq += 1
        result = {"v": 1, "type": "round_result", "seq": seq, "round": number, "pad": b"\x00" * result_bytes}
        publisher.send(topic_frame(TOPIC, msgpack.packb(result)))
    seq += 1
    publisher.send(topic_frame(TOPIC, msgpack.packb({"v": 1, "type": "market_closed", "seq": seq})))
    router.close(linger=1000)
    publisher.close(linger=1000)
    context.term()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--market", required=True)
    parser.add_argument("--feed", required=True)
    parser.add_argument("--agents", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--result-bytes", type=int, required=True)
    parser.add_argument("--validate", action="store_true", help="decode and validate every bid")
    parser.add_argument("--durable", type=Path, help="the durable floor: compiled decoding, one fsync'd commit a round")
    args = parser.parse_args()
    serve(args.market, args.feed, args.agents, args.rounds, args.result_bytes, args.validate, args.durable)
    return 0


if __name__ == "__main__":
    sys.exit(main())

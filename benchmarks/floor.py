"""The physical floor: a bare pyzmq server with the auctioneer's socket pattern and message sizes.

ROUTER + PUB, no validation, no mechanism, no ledger: it announces a round with a payload as large
as the real ``round_open``, acknowledges every bid with a reply as large as ``bid_accepted``, and
publishes a result as large as the real ``round_result``. With ``--validate`` it also decodes every
bid through ``protocol.decode`` (the protocol's checks and nothing else of the market), which
measures what validation alone costs. Run as ``python -m benchmarks.floor``.
"""

from __future__ import annotations

import argparse
import sys

import msgpack
import zmq

from protocol import decode
from protocol.messages import AGENT_REQUESTS
from protocol.topics import market_topic, topic_frame

TOPIC = market_topic("floor")


def serve(market: str, feed: str, agents: int, rounds: int, result_bytes: int, validate: bool) -> None:
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    # XPUB (same wire behaviour as PUB) so the floor can wait for the driver's subscription.
    publisher = context.socket(zmq.XPUB)
    router.bind(market)
    publisher.bind(feed)
    ack = msgpack.packb({"v": 1, "type": "bid_accepted", "round": 1, "re": 1})
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
            router.send_multipart([peer, ack])
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
    args = parser.parse_args()
    serve(args.market, args.feed, args.agents, args.rounds, args.result_bytes, args.validate)
    return 0


if __name__ == "__main__":
    sys.exit(main())

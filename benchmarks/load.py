"""The load driver: N agents in one process, no think time, timing every round.

One DEALER per agent, one SUB for the whole process. On ``round_open`` every agent sends its
pre-built sealed bid (raw msgpack, the distribution's probabilities as a float64 ``bin``); the
driver counts acknowledgements and measures the time from the last acknowledgement (the moment
the round can close) to the ``round_result`` arriving.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgpack
import numpy as np
import zmq


@dataclass
class LoadResult:
    rounds: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    lost_acks: int = 0
    lost_results: int = 0
    result_bytes: int = 0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


def bid_payloads(agents: int, support: int, seed: int = 0) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    payloads = []
    for _ in range(agents):
        tokens = [f" w{t}" for t in rng.choice(4 * support, size=support, replace=False)]
        probs = rng.dirichlet(np.ones(support))
        probs /= probs.sum()
        payloads.append(
            {
                "v": 1,
                "type": "sealed_bid",
                "bid": float(rng.uniform(0.5, 2.0)),
                "distribution": {"tokens": tokens, "probs": probs.astype("<f8").tobytes()},
            }
        )
    return payloads


def drive(market: str, feed: str, agents: int, support: int, rounds: int, timeout: float = 120.0) -> LoadResult:
    """Register ``agents`` agents, bid in every round until ``rounds`` results arrived or the market closed."""
    context = zmq.Context()
    subscriber = context.socket(zmq.SUB)
    subscriber.setsockopt(zmq.SUBSCRIBE, b"")
    subscriber.setsockopt(zmq.RCVHWM, 0)
    subscriber.connect(feed)
    dealers = []
    for _ in range(agents):
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(market)
        dealers.append(dealer)
    poller = zmq.Poller()
    for dealer in dealers:
        poller.register(dealer, zmq.POLLIN)
    payloads = bid_payloads(agents, support)
    result = LoadResult()
    try:
        time.sleep(0.3)  # let the SUB connect before the first round opens
        for i, dealer in enumerate(dealers):
            dealer.send(msgpack.packb({"v": 1, "type": "hello", "name": f"load{i}", "id": 0}))
        for dealer in dealers:
            dealer.recv()
        deadline = time.monotonic() + timeout
        started = None
        while result.rounds < rounds and time.monotonic() < deadline:
            if not subscriber.poll(int(timeout * 1000)):
                break
            message = msgpack.unpackb(subscriber.recv())
            kind = message.get("type")
            if kind == "market_closed":
                break
            if kind != "round_open":
                continue
            number = message["round"]
            started = started or time.perf_counter()
            for dealer, payload in zip(dealers, payloads, strict=True):
                payload["round"] = number
                dealer.send(msgpack.packb(payload))
            acked = 0
            while acked < agents:
                events = poller.poll(int(timeout * 1000))
                if not events:
                    break
                for sock, _ in events:
                    while True:
                        try:
                            sock.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        acked += 1
            last_ack = time.perf_counter()
            result.lost_acks += agents - acked
            while True:
                if not subscriber.poll(int(timeout * 1000)):
                    result.lost_results += 1
                    break
                data = subscriber.recv()
                reply = msgpack.unpackb(data)
                if reply.get("type") == "round_result" and reply.get("round") == number:
                    result.latencies.append(time.perf_counter() - last_ack)
                    result.result_bytes = len(data)
                    result.rounds += 1
                    break
        result.seconds = time.perf_counter() - (started or time.perf_counter())
    finally:
        context.destroy(linger=0)
    return result

"""The load driver: N agents in one process, no think time, timing every round.

One DEALER per agent, one SUB for the whole process. On ``round_open`` every agent sends its
pre-built sealed bid (raw msgpack, the distribution's probabilities as a float64 ``bin``); the
driver counts acknowledgements and measures the time from the last acknowledgement (the moment
the round can close) to the ``round_result`` arriving. The driver shares the machine with what it
measures, so it waits for replies at the cost of the sockets that have them (see :class:`ReplyWaiter`).
"""

from __future__ import annotations

import selectors
import time
from contextlib import closing
from dataclasses import dataclass, field

import msgpack
import numpy as np
import psutil
import zmq
from zmq.utils.monitor import recv_monitor_message

from protocol.topics import TOPIC_MARK, split_frame

MARKET_TOPICS = TOPIC_MARK + b"m."  # the prefix of every market's topic: each broadcast once
# How long the driver waits for the first round's announcement before it asks the market which round
# is open: the feed forwards a subscription once the auctioneer's event loop has read it, and a
# round may open before that (an agent runtime resyncs the same way).
FIRST_ANNOUNCEMENT_WAIT = 1.0
# The driver's agents all connect from one address but stand for as many machines: the auctioneer
# driven by it lifts its per-address request budget (at N = 1000, K = 1024 a round alone is about
# 16,000 units, and the default 20,000/s would drop bids and stall rounds until their deadline).
MANY_MACHINES = ["--address-rate", "1e12"]


def feed_message(frame: bytes) -> dict[str, object]:
    """A feed frame's message, as a plain map (the driver does no validation of its own)."""
    return dict(msgpack.unpackb(split_frame(frame)[1]))


@dataclass
class LoadResult:
    rounds: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    lost_acks: int = 0
    lost_results: int = 0
    missed_opens: int = 0  # results of rounds whose round_open never arrived
    asked_first_round: bool = False  # the first round_open did not arrive: the open round was asked for
    result_bytes: int = 0

    @property
    def lost_messages(self) -> int:
        return self.lost_acks + self.lost_results + self.missed_opens

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


class ReplyWaiter:
    """Counts replies arriving on many DEALER sockets, paying only for the sockets that have them.

    ``zmq.Poller`` asks every socket for its state on every call (about 1 µs each): with 100
    sockets and replies trickling in one by one, that costs the driver most of a core, taken from
    the auctioneer it measures. Instead, epoll watches each socket's notification descriptor
    (``ZMQ_FD``) and only the sockets it wakes are drained. ``ZMQ_FD`` only signals changes and any
    state check resets it (a send included), so every wait starts with one sweep of all sockets.
    """

    def __init__(self, sockets: list[zmq.Socket[bytes]]) -> None:
        self._sockets = sockets
        self._selector = selectors.DefaultSelector()
        for sock in sockets:
            self._selector.register(sock.fileno(), selectors.EVENT_READ, sock)  # ZMQ_FD

    def collect(self, expected: int, timeout: float) -> int:
        """Receive and discard replies until ``expected`` arrived or ``timeout`` passed; how many arrived."""
        received = sum(self._drain(sock) for sock in self._sockets)
        deadline = time.monotonic() + timeout
        while received < expected and (remaining := deadline - time.monotonic()) > 0:
            for key, _ in self._selector.select(remaining):
                received += self._drain(key.data)
        return received

    @staticmethod
    def _drain(sock: zmq.Socket[bytes]) -> int:
        count = 0
        while sock.poll(0, zmq.POLLIN):
            sock.recv(zmq.NOBLOCK)
            count += 1
        return count

    def close(self) -> None:
        self._selector.close()


def connect_subscriber(subscriber: zmq.Socket[bytes], feed: str, timeout: float) -> None:
    """Connect and return once the feed's handshake is done, so no round opens before we listen.

    The auctioneer opens the first round as soon as the agents said hello; their DEALER connections
    may well finish before the SUB's, and a missed ``round_open`` would stall the run for a whole
    round timeout.
    """
    monitor = subscriber.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        subscriber.connect(feed)
        if not monitor.poll(int(timeout * 1000)):
            raise RuntimeError(f"could not connect to the feed at {feed}")
        recv_monitor_message(monitor)
    finally:
        subscriber.disable_monitor()
        monitor.close()


def drive(
    market: str, feed: str, agents: int, support: int, rounds: int, timeout: float = 120.0, can_sync: bool = True
) -> LoadResult:
    """Register ``agents`` agents, bid in every round until ``rounds`` results arrived or the market closed
    (``can_sync``: the server answers ``sync_request``, so a missed first announcement can be asked for;
    the floor does not, and announces its first round only once the driver's subscription arrived)."""
    context = zmq.Context()
    try:
        subscriber = context.socket(zmq.SUB)
        subscriber.setsockopt(zmq.SUBSCRIBE, MARKET_TOPICS)
        subscriber.setsockopt(zmq.RCVHWM, 0)
        connect_subscriber(subscriber, feed, timeout)
        dealers = []
        for _ in range(agents):
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(market)
            dealers.append(dealer)
        with closing(ReplyWaiter(dealers)) as replies:
            for i, dealer in enumerate(dealers):
                dealer.send(msgpack.packb({"v": 1, "type": "hello", "name": f"load{i}", "id": 0}))
            if replies.collect(agents, timeout) < agents:
                raise RuntimeError(f"the market at {market} did not welcome all {agents} agents")
            payloads = bid_payloads(agents, support)
            return bid_rounds(subscriber, dealers, replies, payloads, rounds, timeout, can_sync)
    finally:
        context.destroy(linger=0)


def bid_rounds(
    subscriber: zmq.Socket[bytes],
    dealers: list[zmq.Socket[bytes]],
    replies: ReplyWaiter,
    payloads: list[dict[str, object]],
    rounds: int,
    timeout: float,
    can_sync: bool = True,
) -> LoadResult:
    """Every agent bids in each announced round; timings and losses until ``rounds`` results arrived.
    A first announcement missed for :data:`FIRST_ANNOUNCEMENT_WAIT` is asked for if ``can_sync``."""
    result = LoadResult()
    deadline = time.monotonic() + timeout
    started = None
    while result.rounds < rounds and time.monotonic() < deadline:
        asks = can_sync and started is None
        if subscriber.poll(int((FIRST_ANNOUNCEMENT_WAIT if asks else timeout) * 1000)):
            message = feed_message(subscriber.recv())
        elif asks and (opened := open_round(dealers[0], timeout)) is not None:
            message, result.asked_first_round = opened, True
        elif asks:
            continue
        else:
            break
        kind = message.get("type")
        if kind == "market_closed":
            break
        if kind == "round_result":
            result.missed_opens += 1
        if kind != "round_open":
            continue
        number = message["round"]
        started = started or time.perf_counter()
        for dealer, payload in zip(dealers, payloads, strict=True):
            payload["round"] = number
            dealer.send(msgpack.packb(payload))
        acked = replies.collect(len(dealers), timeout)
        last_ack = time.perf_counter()
        result.lost_acks += len(dealers) - acked
        while True:
            if not subscriber.poll(int(timeout * 1000)):
                result.lost_results += 1
                break
            data = subscriber.recv()
            reply = feed_message(data)
            if reply.get("type") == "round_result" and reply.get("round") == number:
                result.latencies.append(time.perf_counter() - last_ack)
                result.result_bytes = len(data)
                result.rounds += 1
                break
    result.seconds = time.perf_counter() - started if started is not None else 0.0
    return result


def open_round(dealer: zmq.Socket[bytes], timeout: float) -> dict[str, object] | None:
    """The round the market has open (its ``round_open``), asked with a ``sync_request``; None if none is."""
    dealer.send(msgpack.packb({"v": 1, "type": "sync_request", "limit": 1, "id": 0}))
    deadline = time.monotonic() + timeout
    while dealer.poll(max(0, int((deadline - time.monotonic()) * 1000))):
        reply = dict(msgpack.unpackb(dealer.recv()))
        if reply.get("type") == "sync_reply":
            opened = reply.get("open_round")
            return dict(opened) if opened else None
    raise RuntimeError("the market did not answer a sync_request")


@dataclass
class ExchangeLoad:
    """What the exchange driver measured: rounds completed, when, how fast each result came, what was lost."""

    rounds: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    lost_acks: int = 0
    lost_results: int = 0
    peak_rss: int = 0
    machine_cpu_seconds: float = 0.0  # every process's CPU time while the rounds ran (what bounds a shared machine)

    @property
    def lost_messages(self) -> int:
        return self.lost_acks + self.lost_results

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent so far, every core and process together."""
    times = psutil.cpu_times()
    return float(times.user + times.system)


def drive_exchange(
    market: str,
    feed: str,
    agents: int,
    support: int,
    rounds: int,
    timeout: float = 120.0,
    pid: int | None = None,
    names: str = "load",
) -> ExchangeLoad:
    """``agents`` agents bid in every round of every market as it opens, until ``rounds`` results arrived.

    One process, one SUB for every market's topic, one DEALER per agent. Latency is from a round's
    last acknowledgement to its result; a round whose acknowledgements or result never come is lost.
    ``pid``: the auctioneer's process, whose peak resident memory is sampled. ``names``: the prefix
    of the agents' names (drivers of one exchange's shards need their own).
    """
    context = zmq.Context()
    watched = psutil.Process(pid) if pid is not None else None
    try:
        subscriber = context.socket(zmq.SUB)
        subscriber.setsockopt(zmq.SUBSCRIBE, MARKET_TOPICS)
        subscriber.setsockopt(zmq.RCVHWM, 0)
        connect_subscriber(subscriber, feed, timeout)
        dealers = []
        for _ in range(agents):
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.RCVHWM, 0)
            dealer.connect(market)
            dealers.append(dealer)
        for i, dealer in enumerate(dealers):
            dealer.send(msgpack.packb({"v": 1, "type": "hello", "name": f"{names}{i}", "id": 0}))
            if not dealer.poll(int(timeout * 1000)):
                raise RuntimeError(f"the exchange at {market} did not welcome agent {i}")
            dealer.recv()
        return _trade(subscriber, dealers, bid_payloads(agents, support), rounds, timeout, watched)
    finally:
        context.destroy(linger=0)


def _trade(
    subscriber: zmq.Socket[bytes],
    dealers: list[zmq.Socket[bytes]],
    payloads: list[dict[str, object]],
    rounds: int,
    timeout: float,
    watched: psutil.Process | None,
) -> ExchangeLoad:
    result = ExchangeLoad()
    poller = zmq.Poller()
    for sock in (*dealers, subscriber):
        poller.register(sock, zmq.POLLIN)
    waiting: dict[tuple[str, int], int] = {}  # (market, round) -> acknowledgements still due
    acked_at: dict[tuple[str, int], float] = {}
    sent = acknowledged = 0
    started: float | None = None
    machine_cpu = 0.0
    last_activity = time.monotonic()
    while result.rounds < rounds and time.monotonic() - last_activity < timeout:
        events = dict(poller.poll(1000))
        if not events:
            continue
        last_activity = time.monotonic()
        for dealer in dealers:  # acknowledgements first: each was sent before its round's result
            while dealer.poll(0):
                reply = msgpack.unpackb(dealer.recv())
                acknowledged += reply.get("type") == "bid_accepted"
                key = (str(reply.get("market")), int(reply.get("round", 0)))
                if key in waiting:
                    waiting[key] -= 1
                    if not waiting[key]:
                        del waiting[key]
                        acked_at[key] = time.perf_counter()
        while subscriber.poll(0):
            message = feed_message(subscriber.recv())
            key = (str(message.get("market")), int(message.get("round", 0)))  # type: ignore[call-overload]
            if message["type"] == "round_open":
                if started is None:
                    started, machine_cpu = time.perf_counter(), busy_cpu_seconds()
                waiting[key] = len(dealers)
                for dealer, payload in zip(dealers, payloads, strict=True):
                    dealer.send(msgpack.packb({**payload, "round": key[1], "market": key[0]}))
                    sent += 1
            elif message["type"] == "round_result":
                result.rounds += 1
                waiting.pop(key, None)
                opened = acked_at.pop(key, None)
                if opened is not None:
                    result.latencies.append(time.perf_counter() - opened)
        if watched is not None and result.rounds % 200 == 0:
            result.peak_rss = max(result.peak_rss, watched.memory_info().rss)
    if started is not None:
        result.seconds = time.perf_counter() - started
        result.machine_cpu_seconds = busy_cpu_seconds() - machine_cpu
    for dealer in dealers:  # acknowledgements still on their way
        while dealer.poll(100):
            acknowledged += msgpack.unpackb(dealer.recv()).get("type") == "bid_accepted"
    result.lost_acks = sent - acknowledged
    result.lost_results = max(rounds - result.rounds, 0)
    return result

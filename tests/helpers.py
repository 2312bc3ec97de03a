"""Test helpers, all in one place.

- Real markets: auctioneer and agent processes on free loopback ports with a real ledger
  (:class:`MarketRun`), a raw DEALER for protocol-level tests (:class:`RawPeer`), waiting and reading.
- Random auction instances for hypothesis (:func:`instances`) and running the numpy mechanism on one
  (:func:`run_instance`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from auctioneer.ledger import Ledger, StoredMarket
from auctioneer.mechanism import AuctionOutcome, Reference, SparseDistribution, run_auction
from protocol import Distribution
from protocol.market_rules import MechanismSettings
from protocol.messages import RoundOpen, SyncReply, SyncRequest
from protocol.sockets import free_tcp_endpoint
from simulation.processes import LocalMarket
from simulation.scenario import Scenario

FAST = ["--heartbeat", "0.2", "--round-timeout", "1.0"]
BID = Distribution.from_mapping({"x": 1.0})
SEED = bytes(range(32))

# --- real markets -----------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], bool],
    timeout: float = 30.0,
    what: str = "condition",
    context: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` until it holds; past ``timeout``, fail saying ``what`` (and ``context()``,
    say the processes' logs)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{context()}" if context else ""))
        time.sleep(0.05)


def stopped_within(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """``process``'s exit status if it ends within ``timeout`` seconds; else None, after asking it
    (SIGUSR1) to write its threads' stacks to its log, for the failure message."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        return None


def read_ledger(db: Path) -> dict[str, Any]:
    with Ledger.open_existing(db) as ledger:
        return ledger.document()


def stored_default_market(db: Path) -> StoredMarket | None:
    """The default market as ``db`` holds it; None while the ledger or its market does not exist
    yet (serve creates the file before it records the market)."""
    if not db.exists():
        return None
    with Ledger(db) as ledger:
        return ledger.market(ledger.default_market() or "")


def default_market_closed(db: Path) -> bool:
    market = stored_default_market(db)
    return market is not None and market.closed is not None


def committed_rounds(db: Path) -> int:
    market = stored_default_market(db)
    return market.last_round if market else 0


def free_http_address() -> str:
    return free_tcp_endpoint().removeprefix("tcp://")


def scrape(address: str) -> dict[str, float]:
    """Every sample of ``/metrics``, by name and labels (``name{label=value}``)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def static_agent(distribution: str, bid: float) -> list[str]:
    return ["--distribution", distribution, "--bid", str(bid)]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


class MarketRun(LocalMarket):
    """A :class:`LocalMarket` whose logs land in the test's directory."""

    def __init__(self, directory: Path) -> None:
        super().__init__(verbosity=1)
        self.directory = directory
        self.db = directory / "market.db"

    def serve(self, *args: str, default_market: bool = True) -> None:
        """Start an auctioneer (again); it opens a market with an empty prompt unless the arguments
        say otherwise, or ``default_market`` is False (an exchange that starts empty)."""
        starts = len(list(self.directory.glob("auctioneer*.log")))
        given = "--prompt" in args or "--config" in args
        market = [] if given or not default_market else ["--prompt", ""]
        self.start_auctioneer(self.db, [*FAST, *market, *args], self.directory / f"auctioneer{starts or ''}.log")

    def agent(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        self.start_agent(name, args, self.directory / f"{name}.log")
        return self.processes[-1]

    def swarms(self, processes: int, agents: int, *extra: str) -> list[subprocess.Popen[bytes]]:
        """``processes`` agent swarms (``python -m cli.swarm``) of ``agents`` each, reporting
        to ``swarm{i}.json`` and logging to ``swarm{i}.log`` in this run's directory."""
        started = []
        for i in range(processes):
            with open(self.directory / f"swarm{i}.log", "wb") as log:
                started.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "cli.swarm",
                            "--market",
                            self.market,
                            "--feed",
                            self.feed,
                            "--count",
                            str(agents),
                            "--prefix",
                            f"p{i}a",
                            "--seed",
                            str(i),
                            "--report-json",
                            str(self.directory / f"swarm{i}.json"),
                            *extra,
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        return started

    def swarm_reports(self, processes: int) -> list[dict[str, Any]]:
        return [a for i in range(processes) for a in json.loads((self.directory / f"swarm{i}.json").read_text())]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.directory.glob("*.log")))


class RawPeer:
    """A bare DEALER speaking raw frames to the market socket, for protocol-level tests."""

    def __init__(self, endpoint: str) -> None:
        import zmq

        self.zmq = zmq
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)

    def send(self, *frames: bytes) -> None:
        self.socket.send_multipart(list(frames))

    def request(self, message: Any, timeout: float = 10.0) -> Any:
        from protocol import encode

        self.send(encode(message))
        return self.receive(timeout)

    def receive(self, timeout: float = 10.0) -> Any:
        from protocol import decode

        if not self.socket.poll(int(timeout * 1000)):
            raise AssertionError("no reply from the auctioneer")
        return decode(self.socket.recv())

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


def open_round(peer: RawPeer) -> RoundOpen:
    """Wait (via sync) until a round is open, and return its announcement."""
    for _ in range(200):
        reply = peer.request(SyncRequest(since_seq=0, limit=1))
        assert isinstance(reply, SyncReply)
        if reply.open_round is not None:
            return reply.open_round
        time.sleep(0.05)
    raise AssertionError("no round opened")


def load_scenario(path: Path) -> Scenario:
    return Scenario.from_document(tomllib.loads(path.read_text()), path)


# --- random auction instances -----------------------------------------------------------------

TOKENS = ["a", "b", " Large", "Generative", " the", "é", "日本", "\U0001f600", "Z", " z"]


@dataclass
class Instance:
    dists: list[dict[str, float]]
    bids: list[float]
    reference: dict[str, float] | None
    reference_weight: float

    @property
    def rows(self) -> list[dict[str, float]]:
        return self.dists + ([self.reference] if self.reference is not None else [])

    @property
    def row_bids(self) -> list[float]:
        return self.bids + ([self.reference_weight] if self.reference is not None else [])


@st.composite
def distributions(draw: st.DrawFn) -> dict[str, float]:
    support = draw(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=5, unique=True))
    raw = draw(st.lists(st.floats(0.05, 1.0), min_size=len(support), max_size=len(support)))
    total = sum(raw)
    return {t: w / total for t, w in zip(support, raw, strict=True)}


bid_values = st.one_of(st.just(0.0), st.floats(0.01, 10.0))


@st.composite
def instances(draw: st.DrawFn, max_agents: int = 5, with_reference: bool = True) -> Instance:
    n = draw(st.integers(1, max_agents))
    dists = [draw(distributions()) for _ in range(n)]
    bids = draw(st.lists(bid_values, min_size=n, max_size=n))
    reference = draw(st.none() | distributions()) if with_reference else None
    weight = draw(bid_values) if reference is not None else 0.0
    return Instance(dists, bids, reference, weight)


def run_instance(
    instance: Instance, aggregation: str = "linear", payment: str = "first_price", seed: bytes = SEED, **config: Any
) -> AuctionOutcome:
    reference = None
    if instance.reference is not None:
        reference = Reference(SparseDistribution.from_mapping(instance.reference), instance.reference_weight)
    return run_auction(
        [SparseDistribution.from_mapping(d) for d in instance.dists],
        instance.bids,
        MechanismSettings(aggregation=aggregation, payment=payment, **config),
        seed,
        reference,
    )


# --- the wire, spoken by hand (no client of ours) ---------------------------------------------


class WireClient:
    """A DEALER that sends msgpack maps built by hand and reads replies as plain maps, keeping a
    transcript of both (``sent``, ``received``)."""

    def __init__(self, endpoint: str) -> None:
        import zmq

        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self._ids = iter(range(1, 2**62))

    def request(self, kind: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        import msgpack

        message = {"v": 1, "type": kind, "id": next(self._ids), **fields}
        self.sent.append(message)
        self.socket.send(msgpack.packb(message, use_bin_type=True))
        while True:
            if not self.socket.poll(int(timeout * 1000)):
                raise AssertionError(f"no reply to {kind}")
            reply = msgpack.unpackb(self.socket.recv(), raw=False)
            self.received.append(reply)
            if reply.get("re") == message["id"]:
                return dict(reply)

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


TOPIC_MARK = b"\xc1"


class WireFeed:
    """A SUB reading feed frames by hand: ``0xC1 topic 0x0A msgpack``, kept in ``seen``."""

    def __init__(self, endpoint: str, *topics: str) -> None:
        import zmq

        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, TOPIC_MARK + topic.encode() + b"\n" if topic else b"")
        self.socket.connect(endpoint)
        self.seen: list[tuple[str | None, dict[str, Any]]] = []

    def next(self, predicate: Callable[[str | None, dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        """The next message (topic, map) that ``predicate`` accepts, reading and keeping every one."""
        import msgpack

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.socket.poll(100):
                continue
            frame = self.socket.recv()
            topic: str | None = None
            if frame.startswith(TOPIC_MARK):
                head, _, frame = frame[1:].partition(b"\n")
                topic = head.decode()
            message = dict(msgpack.unpackb(frame, raw=False))
            self.seen.append((topic, message))
            if predicate(topic, message):
                return message
        raise AssertionError("the feed did not bring the message waited for")

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()

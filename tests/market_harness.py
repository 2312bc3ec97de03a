"""Running real markets in tests: auctioneer and agent processes on free loopback ports, a real ledger."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from auctioneer.ledger import Ledger
from auctioneer.ledger_cli import ledger_document
from auctioneer.processes import LocalMarket

FAST = ["--heartbeat", "0.2", "--round-timeout", "1.0"]


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def read_ledger(db: Path) -> dict[str, Any]:
    with Ledger(db) as ledger:
        return ledger_document(ledger)


def committed_rounds(db: Path) -> int:
    if not db.exists():
        return 0
    with Ledger(db) as ledger:
        return ledger.last_round()


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

    def serve(self, *args: str) -> None:
        starts = len(list(self.directory.glob("auctioneer*.log")))
        self.start_auctioneer(self.db, [*FAST, *args], self.directory / f"auctioneer{starts or ''}.log")

    def agent(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        self.start_agent(name, args, self.directory / f"{name}.log")
        return self.processes[-1]

    def swarms(self, processes: int, agents: int, *extra: str) -> list[subprocess.Popen[bytes]]:
        """``processes`` agent swarms (``python -m agent_client.swarm``) of ``agents`` each, reporting
        to ``swarm{i}.json`` and logging to ``swarm{i}.log`` in this run's directory."""
        started = []
        for i in range(processes):
            with open(self.directory / f"swarm{i}.log", "wb") as log:
                started.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "agent_client.swarm",
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

"""Starting a market as separate local processes (auctioneer + agents), for the demo and simulations."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protocol.sockets import free_tcp_endpoint


@dataclass
class LocalMarket:
    """An auctioneer process and agent processes on loopback, on free ports."""

    market: str = field(default_factory=free_tcp_endpoint)
    feed: str = field(default_factory=free_tcp_endpoint)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    verbosity: int = 0

    def start_auctioneer(self, db: Path | str, serve_args: Sequence[str], log: Path | None = None) -> None:
        command = [
            sys.executable,
            "-m",
            "auctioneer",
            *self._verbose(),
            "serve",
            "--quiet",
            "--market",
            self.market,
            "--feed",
            self.feed,
            "--db",
            str(db),
            *serve_args,
        ]
        self._start(command, log)

    def start_agent(self, name: str, agent_args: Sequence[str], log: Path | None = None) -> None:
        command = [
            sys.executable,
            "-m",
            "agent_client",
            *self._verbose(),
            "--quiet",
            "--market",
            self.market,
            "--feed",
            self.feed,
            "--name",
            name,
            *agent_args,
        ]
        self._start(command, log)

    def _verbose(self) -> list[str]:
        return ["-" + "v" * self.verbosity] if self.verbosity else []

    def _start(self, command: list[str], log: Path | None) -> None:
        if log is None:
            self.processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
            return
        with open(log, "wb") as output:  # the child keeps its own descriptor; ours closes here
            self.processes.append(subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT))

    def wait(self, timeout: float) -> list[int]:
        """Exit codes of every process (killing any still running after ``timeout``)."""
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
        return codes

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        self.wait(timeout=5)

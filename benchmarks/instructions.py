"""Instructions ``auctioneer serve`` executes per committed round, counted by valgrind's callgrind.

This VM's wall-clock rates move by a quarter within a minute; instruction counts hardly move (the
same run counted twice differs by about 1 % for an exchange of 300 markets, up to 3 % for one market
of 100 agents, whose bids batch differently between the loop's turns from run to run). So two
versions of the code are best compared here:
run this in each checkout. ``serve`` runs under callgrind twice, with ``--rounds`` rounds per market
and with three times as many, driven as ``benchmarks.profile_market`` drives it; its start-up and
shutdown are alike in both runs and cancel out of

    (instructions(3R) - instructions(R)) / (rounds(3R) - rounds(R)).

Instructions are not time: a cache miss, the fsync's wait or a blocked system call count for
little. But the Python work that bounds the auctioneer is counted faithfully. Every thread of the
process is counted (libzmq's I/O thread included). Needs valgrind (``apt-get install valgrind``);
``serve`` runs about 50 times slower under it, so a run takes a minute or two.

``python -m benchmarks.instructions [--markets 300] [--rounds 5]``: an exchange of markets of 3
agents; ``--markets 0 --agents 100 --support 64 --rounds 20``: one market.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from benchmarks.profile_market import Drive, exchange_workload, market_workload, run_serve_under
from protocol.errors import UserError

LONGER = 3  # the second run has this many times the rounds of the first


class ValgrindMissing(UserError):
    """valgrind is not installed."""


@dataclass(frozen=True)
class Count:
    """One run under callgrind: the instructions of every thread, and the rounds the driver completed."""

    instructions: int
    rounds: int


def callgrind_total(output: Path) -> int:
    """The instruction total a callgrind output file records (its ``summary:`` line)."""
    with output.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise ValueError(f"{output} has no summary line: did callgrind finish?")


def count_instructions(serve: list[str], run: Drive, scratch: Path) -> Count:
    """Run ``serve`` under callgrind until its markets closed: its instructions and the rounds driven."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise ValgrindMissing("valgrind is not installed: apt-get install valgrind")
    output = scratch / "callgrind.out"
    launcher = [valgrind, "-q", "--tool=callgrind", f"--callgrind-out-file={output}", sys.executable]
    rounds = run_serve_under(launcher, serve, run, scratch / "serve.db", exit_timeout=600)
    return Count(callgrind_total(output), rounds)


def per_round(short: Count, long: Count) -> float:
    """Instructions per committed round, start-up and shutdown cancelled out."""
    if long.rounds <= short.rounds:
        raise ValueError(f"the longer run completed {long.rounds} rounds, the shorter {short.rounds}")
    return (long.instructions - short.instructions) / (long.rounds - short.rounds)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("--markets", type=int, default=300, help="markets of 3 agents; 0: one market")
    parser.add_argument("--agents", type=int, default=100, help="agents of the one market")
    parser.add_argument("--support", type=int, default=64, help="tokens per bid in the one market")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per market in the shorter run")
    args = parser.parse_args()
    console = Console()
    counts = []
    for rounds in (args.rounds, LONGER * args.rounds):
        with tempfile.TemporaryDirectory(prefix="token-auction-instructions-") as directory:
            scratch = Path(directory)
            if args.markets:
                serve, run = exchange_workload(args.markets, rounds, scratch)
            else:
                serve, run = market_workload(args.agents, args.support, rounds)
            with console.status(f"serve under callgrind, {rounds} rounds per market"):
                try:
                    counts.append(count_instructions(serve, run, scratch))
                except ValgrindMissing as exc:
                    print(exc, file=sys.stderr)
                    return 2
    try:
        instructions = per_round(*counts)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    console.print(
        f"{instructions:,.0f} instructions per committed round "
        f"({counts[0].rounds} and {counts[1].rounds} rounds: {counts[0].instructions:,} and {counts[1].instructions:,})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

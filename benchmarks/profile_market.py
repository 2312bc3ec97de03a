"""Where the auctioneer's time goes: ``auctioneer serve`` under cProfile, driven by the load driver.

``python -m benchmarks.profile_market [--agents 100] [--support 64] [--rounds 300]`` runs one
market to its end with the benchmark's load and prints the auctioneer's functions by cumulative
time, per round. cProfile inflates code that makes many small Python calls, so read the shares
against each other, not the absolute figures against the benchmark's.
"""

from __future__ import annotations

import argparse
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.load import MANY_MACHINES, drive
from protocol.sockets import free_tcp_endpoint

OWN_CODE = ("auctioneer", "protocol", "zmq", "sqlite3", "msgpack", "pydantic")
# Building models at import time is not serving: leave pydantic's schema generation out of the report.
IMPORT_TIME = ("pydantic/_internal", "pydantic/plugin", "pydantic/_migration", "pydantic/__init__")


def profile_market(agents: int, support: int, rounds: int, output: Path) -> int:
    """Run the market under cProfile into ``output``; the number of rounds the driver completed."""
    market, feed = free_tcp_endpoint(), free_tcp_endpoint()
    command = [sys.executable, "-m", "cProfile", "-o", str(output), "-m", "auctioneer", "serve", "--quiet"]
    command += ["--market", market, "--feed", feed, "--db", str(output.with_suffix(".db"))]
    command += [
        "--prompt",
        "",
        "--min-agents",
        str(agents),
        "--max-tokens",
        str(rounds),
        "--round-timeout",
        "60",
        "--heartbeat",
        "1",
        *MANY_MACHINES,
    ]
    server = subprocess.Popen(command)
    try:
        completed = drive(market, feed, agents, support, rounds).rounds
        server.wait(60)  # the market closed: serve exits after its close grace and writes the profile
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return completed


def print_profile(output: Path, rounds: int, limit: int) -> None:
    stats = pstats.Stats(str(output))
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if (
            name != "<module>"
            and any(part in filename for part in OWN_CODE)
            and not any(part in filename for part in IMPORT_TIME)
        ):
            rows.append((cumulative, own, calls, f"{Path(filename).parent.name}/{Path(filename).name}:{line} {name}"))
    table = Table(title=f"auctioneer serve under cProfile, per round ({rounds} rounds)")
    for column in ("cumulative ms", "own ms", "calls", "function"):
        table.add_column(column)
    for cumulative, own, calls, where in sorted(rows, reverse=True)[:limit]:
        table.add_row(f"{cumulative / rounds * 1e3:.3f}", f"{own / rounds * 1e3:.3f}", f"{calls / rounds:.1f}", where)
    Console().print(table)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_market", description=__doc__)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--support", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--top", type=int, default=30, help="how many functions to list")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="token-auction-profile-") as scratch:
        output = Path(scratch) / "serve.prof"
        completed = profile_market(args.agents, args.support, args.rounds, output)
        if not completed or not output.exists():
            print("the profiled market completed no round; nothing to show", file=sys.stderr)
            return 1
        print_profile(output, completed, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())

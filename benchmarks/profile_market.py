"""Where the auctioneer's time goes: ``auctioneer serve`` driven by the benchmarks' load, profiled.

``python -m benchmarks.profile_market [--agents 100] [--support 64] [--rounds 300]`` runs one
market to its end; ``--markets 1000`` runs an exchange of that many markets of 3 agents instead
(``--rounds`` each), as ``benchmarks/exchange.py`` does. Two ways to look:

- ``--sampler py-spy`` (the default; ``pip install py-spy``): py-spy samples the running process
  from outside, so small Python calls cost what they cost. Printed: each function's share of the
  samples taken while the event loop worked (inclusive: the function or anything it called), and
  the share spent in the function itself. These are the shares the README quotes.
- ``--sampler cprofile``: the process under cProfile, functions by cumulative time per round.
  cProfile's own cost per call inflates code that makes many small calls, so read these shares
  against each other, not against the benchmark's figures.
"""

from __future__ import annotations

import argparse
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.exchange import AGENTS, SERVE_FLAGS, exchange_config, wait_until_serving
from benchmarks.load import MANY_MACHINES, drive, drive_exchange
from protocol.errors import UserError
from simulation.processes import LocalMarket

OWN_CODE = ("auctioneer", "protocol", "zmq", "sqlite3", "msgpack", "pydantic")
# Building models at import time is not serving: leave pydantic's schema generation out of the report.
IMPORT_TIME = ("pydantic/_internal", "pydantic/plugin", "pydantic/_migration", "pydantic/__init__")
EVENT_LOOP_WORK = "Handle._run"  # the frame under which every callback and task step of the loop runs
SAMPLES_PER_SECOND = 250
Drive = Callable[[LocalMarket], int]


class SamplerError(UserError):
    """py-spy is not installed, or cannot sample the auctioneer (the message says which)."""


def market_workload(agents: int, support: int, rounds: int) -> tuple[list[str], Drive]:
    """``serve`` arguments for one market of ``agents`` bidding ``support`` tokens, and its driver."""
    serve = ["--prompt", "", "--min-agents", str(agents), "--max-tokens", str(rounds)]
    serve += ["--round-timeout", "60", "--heartbeat", "1", *MANY_MACHINES]
    return serve, lambda market: drive(market.market, market.feed, agents, support, rounds).rounds


def exchange_workload(markets: int, rounds: int, scratch: Path) -> tuple[list[str], Drive]:
    """``serve`` arguments for an exchange of ``markets`` markets of 3 agents, and its driver."""
    config = exchange_config(scratch / "exchange.toml", markets, rounds)
    serve = ["--config", str(config), *SERVE_FLAGS]
    return serve, lambda market: drive_exchange(market.market, market.feed, AGENTS, 8, markets * rounds).rounds


def run_serve_under(launcher: list[str], serve: list[str], run: Drive, db: Path, exit_timeout: float = 60) -> int:
    """Run ``launcher -m auctioneer serve ...`` (``launcher`` ends with the Python to run) until the
    driver is done and ``serve`` exited after its markets closed; the number of rounds completed."""
    endpoints = LocalMarket()  # free ports, and what the driver connects to
    command = [*launcher, "-m", "auctioneer", "serve", "--quiet", "--market", endpoints.market]
    command += ["--feed", endpoints.feed, "--db", str(db), *serve]
    server = subprocess.Popen(command)
    try:
        wait_until_serving(endpoints, timeout=600)
        completed = run(endpoints)
        server.wait(exit_timeout)  # serve exits after its close grace; the profiler writes then
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return completed


def profile_with_cprofile(serve: list[str], run: Drive, output: Path) -> int:
    """Run ``serve`` under cProfile into ``output``; the number of rounds the driver completed."""
    return run_serve_under([sys.executable, "-m", "cProfile", "-o", str(output)], serve, run, output.with_suffix(".db"))


def sample_with_py_spy(serve: list[str], run: Drive, output: Path) -> int:
    """Run ``serve``, sample it with py-spy into ``output`` (raw stacks) while the driver runs; the
    number of rounds the driver completed."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SamplerError("py-spy is not installed: pip install py-spy, or pass --sampler cprofile")
    market = LocalMarket()
    market.start_auctioneer(output.with_suffix(".db"), serve)
    try:
        wait_until_serving(market)
        sampler = attach_py_spy(py_spy, market.processes[0].pid, output)
        try:
            completed = run(market)
        finally:
            sampler.send_signal(signal.SIGINT)  # py-spy stops and writes what it sampled
            sampler.communicate(timeout=60)
    finally:
        market.stop()
    return completed


def attach_py_spy(py_spy: str, pid: int, output: Path) -> subprocess.Popen[str]:
    """py-spy (the executable at ``py_spy``) recording process ``pid`` into ``output``, returned once
    it samples."""
    record = [py_spy, "record", "--rate", str(SAMPLES_PER_SECOND), "--format", "raw", "--output", str(output)]
    sampler = subprocess.Popen([*record, "--pid", str(pid)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert sampler.stdout is not None
    for line in sampler.stdout:  # py-spy says so once it has attached
        if "Sampling process" in line:
            return sampler
    _, error = sampler.communicate()
    raise SamplerError(f"py-spy could not sample the auctioneer: {error.strip() or 'it exited'}")


@dataclass(frozen=True)
class Share:
    function: str
    inclusive: float  # of the samples, the function or what it called was running
    own: float  # of the samples, the function itself was running


def sampled_shares(raw_lines: Iterable[str], under: str = EVENT_LOOP_WORK) -> list[Share]:
    """Shares of py-spy's raw samples (``frame;frame;... count``, outermost frame first), counting
    only the samples whose stack passes through ``under``, and each function once per stack."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw_lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        functions = [frame.split(" (")[0] for frame in stack.split(";")]
        if not stack or under not in functions:
            continue
        functions = functions[functions.index(under) + 1 :]
        samples = int(count)
        total += samples
        inclusive.update(dict.fromkeys(functions, samples))
        if functions:
            own[functions[-1]] += samples
    if not total:
        return []
    return [Share(name, hits / total, own[name] / total) for name, hits in inclusive.most_common()]


def print_samples(output: Path, rounds: int, limit: int) -> None:
    with output.open(encoding="utf-8") as raw:
        shares = sampled_shares(raw)
    table = Table(title=f"auctioneer serve sampled by py-spy ({rounds} rounds), shares of the event loop's work")
    for column in ("inclusive", "own", "function"):
        table.add_column(column)
    for share in shares[:limit]:
        table.add_row(f"{share.inclusive:6.1%}", f"{share.own:6.1%}", share.function)
    Console().print(table)


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
    parser.add_argument("--markets", type=int, help="profile an exchange of this many markets of 3 agents")
    parser.add_argument("--sampler", choices=["py-spy", "cprofile"], default="py-spy")
    parser.add_argument("--top", type=int, default=30, help="how many functions to list")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="token-auction-profile-") as directory:
        scratch = Path(directory)
        if args.markets:
            serve, run = exchange_workload(args.markets, args.rounds, scratch)
        else:
            serve, run = market_workload(args.agents, args.support, args.rounds)
        output = scratch / ("serve.raw" if args.sampler == "py-spy" else "serve.prof")
        try:
            if args.sampler == "py-spy":
                completed = sample_with_py_spy(serve, run, output)
            else:
                completed = profile_with_cprofile(serve, run, output)
        except SamplerError as exc:
            print(exc, file=sys.stderr)
            return 2
        if not completed or not output.exists():
            print("the profiled market completed no round; nothing to show", file=sys.stderr)
            return 1
        show = print_samples if args.sampler == "py-spy" else print_profile
        show(output, completed, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())

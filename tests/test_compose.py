"""docker-compose.yml: every service's command parses with our CLIs, and the services run as local processes.

There is no Docker engine here, so the compose file's commands are run directly, with the compose
hostnames and wildcard binds swapped for 127.0.0.1 and the ports for free ones. The default services
are the demo market; the ``exchange`` profile is an exchange, an operator and two advertisers.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import yaml

from auctioneer.ledger import Ledger, PostgresLedger
from cli.agent import build_parser as agent_parser
from cli.main import auctioneer_parser
from protocol.sockets import free_tcp_endpoint
from tests.helpers import read_ledger

ROOT = Path(__file__).resolve().parents[1]
PARSERS = {"auctioneer": auctioneer_parser, "agent-client": agent_parser}


def services(profile: str | None = None) -> dict[str, list[str]]:
    """The commands of the services of ``profile`` (None: the services without a profile)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {
        name: shlex.split(spec["command"])
        for name, spec in compose["services"].items()
        if "command" in spec  # (not the database: an image of its own)
        and ((profile in spec.get("profiles", [])) or (profile is None and "profiles" not in spec))
    }


def test_every_service_command_is_accepted_by_our_parsers() -> None:
    assert set(services()) == {"auctioneer", "agent1", "agent2", "agent3"}
    assert set(services("exchange")) == {"exchange", "operator", "alpha", "beta"}
    assert set(services("scale-out")) == {"shard1", "shard2", "shard3", "queries", "gamma", "delta"}
    for argv in [*services().values(), *services("exchange").values(), *services("scale-out").values()]:
        args = PARSERS[argv[0]]().parse_args(argv[1:])
        assert callable(args.run)


def start_services(
    commands: dict[str, list[str]], swaps: dict[str, str], logs: Path
) -> dict[str, subprocess.Popen[bytes]]:
    started = {}
    for name, argv in commands.items():
        module = "auctioneer" if argv[0] == "auctioneer" else "agent_client"
        command = [sys.executable, "-m", module, *[swaps.get(a, a) for a in argv[1:]]]
        with open(logs / f"{name}.log", "wb") as log:
            started[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return started


def test_compose_services_run_as_local_processes(tmp_path: Path) -> None:
    market, feed = free_tcp_endpoint(), free_tcp_endpoint()
    swaps = {
        "tcp://0.0.0.0:5555": market,
        "tcp://0.0.0.0:5556": feed,
        "tcp://auctioneer:5555": market,
        "tcp://auctioneer:5556": feed,
        "/data/market.db": str(tmp_path / "m.db"),
    }
    processes = start_services(services(), swaps, tmp_path)
    try:
        codes = [p.wait(90) for p in processes.values()]
    finally:
        for p in processes.values():
            p.kill()
    logs = "\n".join(f.read_text() for f in tmp_path.glob("*.log"))
    assert codes == [0, 0, 0, 0], logs
    ledger = read_ledger(tmp_path / "m.db")
    assert ledger["text"].startswith("Mechanism Design for")
    assert sorted(ledger["rounds"][0]["bids"]) == ["agent1", "agent2", "agent3"]


def test_compose_exchange_profile_runs_as_local_processes(tmp_path: Path) -> None:
    market, feed = free_tcp_endpoint(), free_tcp_endpoint()
    swaps = {
        "tcp://0.0.0.0:6555": market,
        "tcp://0.0.0.0:6556": feed,
        "tcp://exchange:6555": market,
        "tcp://exchange:6556": feed,
        "/data/exchange.db": str(tmp_path / "x.db"),
        "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16": "127.0.0.0/8",  # local processes come from loopback
        "0.0.0.0:8080": (http := free_tcp_endpoint().removeprefix("tcp://")),
    }
    processes = start_services(services("exchange"), swaps, tmp_path)
    try:
        # the operator opens the market and exits; the advertisers exit once it closed
        codes = [processes[name].wait(90) for name in ("operator", "alpha", "beta")]
        with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as response:
            metrics = response.read().decode()
    finally:
        for p in processes.values():
            p.terminate()
            p.wait(30)
    logs = "\n".join(f.read_text() for f in tmp_path.glob("*.log"))
    assert codes == [0, 0, 0], logs
    with Ledger.open_existing(tmp_path / "x.db") as ledger:
        document = ledger.document("hawaii")
        assert document["text"].startswith("Vacations in Hawaii:") and document["closed"] == "max_tokens"
        assert sorted(document["rounds"][0]["bids"]) == ["alpha", "beta"]
        assert ledger.overview()["accounts"]["alpha"]["budget"] == 20.0
    assert f"token_auction_rounds_committed_total {float(len(document['rounds']))}" in metrics


def test_the_image_holds_every_package_the_commands_import() -> None:
    packaged = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")}
    assert {name.rstrip("*") for name in packaged} <= copied


def test_compose_scale_out_profile_runs_as_local_processes(tmp_path: Path, postgres_url: str) -> None:
    swaps = {
        "postgresql://postgres@postgres:5432/token_auction": postgres_url,
        "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16": "127.0.0.0/8",
    }
    for shard in ("shard1", "shard2", "shard3"):
        market, feed = free_tcp_endpoint(), free_tcp_endpoint()
        swaps |= {f"tcp://{shard}:7555": market, f"tcp://{shard}:7556": feed}
    commands = services("scale-out")
    for shard in ("shard1", "shard2", "shard3"):  # each its own binds, as its own host would have
        binds = {"tcp://0.0.0.0:7555": swaps[f"tcp://{shard}:7555"], "tcp://0.0.0.0:7556": swaps[f"tcp://{shard}:7556"]}
        commands[shard] = [binds.get(argument, argument) for argument in commands[shard]]
    shards = start_services({name: commands[name] for name in ("shard1", "shard2", "shard3")}, swaps, tmp_path)
    try:
        time.sleep(2.0)  # the three shards up and known to each other
        rest = start_services({name: commands[name] for name in ("queries", "gamma", "delta")}, swaps, tmp_path)
        codes = [rest[name].wait(90) for name in ("queries", "gamma", "delta")]
    finally:
        for p in shards.values():
            p.terminate()
            p.wait(30)
    logs = "\n".join(f.read_text() for f in tmp_path.glob("*.log"))
    assert codes == [0, 0, 0], logs
    with PostgresLedger(postgres_url) as ledger:
        document = ledger.document("tokyo")
    assert document["closed"] == "max_tokens" and sorted(document["rounds"][0]["bids"]) == ["delta", "gamma"]

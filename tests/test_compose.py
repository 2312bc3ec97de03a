"""docker-compose.yml: every service's command parses with our CLIs, and the services run as local processes.

There is no Docker engine here, so the compose file's commands are run directly, with the compose
hostnames and wildcard binds swapped for 127.0.0.1 and the ports for free ones.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from cli.agent import build_parser as agent_parser
from cli.main import auctioneer_parser
from protocol.sockets import free_tcp_endpoint
from tests.helpers import read_ledger

ROOT = Path(__file__).resolve().parents[1]
PARSERS = {"auctioneer": auctioneer_parser, "agent-client": agent_parser}


def services() -> dict[str, list[str]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {name: shlex.split(spec["command"]) for name, spec in compose["services"].items()}


def test_every_service_command_is_accepted_by_our_parsers() -> None:
    commands = services()
    assert set(commands) == {"auctioneer", "agent1", "agent2", "agent3"}
    for argv in commands.values():
        args = PARSERS[argv[0]]().parse_args(argv[1:])
        assert callable(args.run)


def test_compose_services_run_as_local_processes(tmp_path: Path) -> None:
    market, feed = free_tcp_endpoint(), free_tcp_endpoint()
    swaps = {
        "tcp://0.0.0.0:5555": market,
        "tcp://0.0.0.0:5556": feed,
        "tcp://auctioneer:5555": market,
        "tcp://auctioneer:5556": feed,
        "/data/market.db": str(tmp_path / "m.db"),
    }
    processes = []
    try:
        for name, argv in services().items():
            module = "auctioneer" if argv[0] == "auctioneer" else "agent_client"
            command = [sys.executable, "-m", module, *[swaps.get(a, a) for a in argv[1:]]]
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
        codes = [p.wait(90) for p in processes]
    finally:
        for p in processes:
            p.kill()
    logs = "\n".join(f.read_text() for f in tmp_path.glob("*.log"))
    assert codes == [0, 0, 0, 0], logs
    ledger = read_ledger(tmp_path / "m.db")
    assert ledger["text"].startswith("Mechanism Design for")
    assert sorted(ledger["rounds"][0]["bids"]) == ["agent1", "agent2", "agent3"]


def test_the_image_holds_every_package_the_commands_import() -> None:
    packaged = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")}
    assert {name.rstrip("*") for name in packaged} <= copied

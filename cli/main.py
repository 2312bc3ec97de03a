"""The entry points: ``auctioneer`` (one subcommand per module of this package) and ``agent-client``.

``python -m auctioneer`` and ``python -m agent_client`` run the same commands.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from cli import agent, audit, dashboard, demo, evaluate, keygen, ledger, market, migrate, replay, serve, simulate, watch
from cli.console import add_verbose_flag, run_command

AUCTIONEER_COMMANDS = (
    demo, serve, market, evaluate, replay, ledger, watch, dashboard, audit, migrate, keygen, simulate
)  # fmt: skip


def auctioneer_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auctioneer", description="Run and study token auction markets.")
    add_verbose_flag(parser)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in AUCTIONEER_COMMANDS:
        module.add_parser(subparsers)
    return parser


def auctioneer(argv: Sequence[str] | None = None) -> int:
    return run_command(auctioneer_parser(), argv)


def agent_client(argv: Sequence[str] | None = None) -> int:
    return run_command(agent.build_parser(), argv)

"""The ``auctioneer`` command: one subcommand per module, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from auctioneer import audit, demo, evaluate, keygen, ledger_cli, serve, watch
from protocol.cli import run_command

SUBCOMMANDS = (demo, serve, evaluate, ledger_cli, watch, audit, keygen)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auctioneer", description="Run and study token auction markets.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeatable)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    # `simulate` runs agents too, so it lives above both sides, in the simulation package.
    from simulation import cli as simulate

    simulate.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)

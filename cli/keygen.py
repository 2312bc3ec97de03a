"""``auctioneer keygen``: CurveZMQ keypairs for the auctioneer (``server``) and each agent.

Give the auctioneer ``server.key_secret`` and a directory with the agents' public ``NAME.key``
files; give each agent its ``NAME.key_secret`` and ``server.key``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from auctioneer.security import keygen
from cli.console import stdout


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("keygen", help="write CurveZMQ keypairs", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="directory for the key files")
    parser.add_argument("names", nargs="+", metavar="NAME", help="'server' and agent names")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for public in keygen(args.out, args.names):
        stdout.print(f"wrote {public} and {public.with_suffix('.key_secret')}")
    return 0

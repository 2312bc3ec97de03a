"""``auctioneer keygen``: CurveZMQ keypairs for the auctioneer (``server``) and each agent.

Give the auctioneer ``server.key_secret`` and a directory with the agents' public ``NAME.key``
files; give each agent its ``NAME.key_secret`` and ``server.key``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rich.console import Console

from protocol.cli import UsageError

console = Console()
NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("keygen", help="write CurveZMQ keypairs", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="directory for the key files")
    parser.add_argument("names", nargs="+", metavar="NAME", help="'server' and agent names")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from auctioneer.security import keygen

    bad = [n for n in args.names if not NAME.match(n)]
    if bad:
        raise UsageError(f"invalid key name {bad[0]!r}: use letters, digits, _ . - (agent names)")
    for public in keygen(args.out, args.names):
        console.print(f"wrote {public} and {public.with_suffix('.key_secret')}")
    return 0

"""``auctioneer evaluate``: run the mechanism on rounds given as JSON (no network), print the outcome as JSON.

Input: one round or a list of rounds, each with the mechanism settings of a market's config
(``aggregation``, ``payment``, ``mode``, ``temperature``, ``eps``, ``reference``, ``reference_weight``),
an optional ``seed`` and ``bids``: ``[{"agent", "bid", "distribution"}]``.
"""

from __future__ import annotations

import argparse
import json
import sys

from auctioneer.evaluate import evaluate_round, parse_rounds
from cli.console import UsageError


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "evaluate", help="run the mechanism on rounds given as JSON (no network)", description=__doc__
    )
    parser.add_argument("file", nargs="?", default="-", help="JSON file with a round or a list of rounds; - for stdin")
    parser.set_defaults(run=run)


def read_input(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        with open(name, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    rounds, is_batch = parse_rounds(read_input(args.file))
    results = [evaluate_round(spec) for spec in rounds]
    json.dump(results if is_batch else results[0], sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")
    return 0

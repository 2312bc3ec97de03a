"""``python -m cli.swarm --count N ...``: many agents in one process, for load tests.

``--report-json`` writes, per agent, how many results it received and how its bids were answered.
Exits 0 when every agent saw its market close.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from agent_client.swarm import run_swarm, summary
from cli.console import add_client_endpoints, add_verbose_flag, agent_name, check_writable, positive_int, run_command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.swarm", description=__doc__)
    add_client_endpoints(parser)
    parser.add_argument("--count", type=positive_int, required=True, help="number of agents in this process")
    parser.add_argument("--prefix", type=agent_name, default="swarm", help="agent names are PREFIX0, PREFIX1, ...")
    parser.add_argument("--support", type=positive_int, default=8, help="tokens per agent distribution")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-json", type=Path)
    add_verbose_flag(parser)
    parser.set_defaults(run=run)
    return run_command(parser, argv)


def run(args: argparse.Namespace) -> int:
    if args.report_json:
        check_writable(args.report_json, "--report-json")
    reports = asyncio.run(run_swarm(args.market, args.feed, args.count, args.prefix, args.support, args.seed))
    if args.report_json:
        args.report_json.write_text(json.dumps([summary(r) for r in reports]))
    return 0 if all(r.all_closed for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Many agents in one process, for load tests: ``python -m agent_client.swarm --count N ...``.

Each agent is a full :class:`AgentRuntime` (its own DEALER and SUB) on one shared ZeroMQ context,
bidding a random static distribution over ``--support`` tokens. ``--report-json`` writes, per
agent, how many results it received and how its bids were answered, to check nothing was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zmq.asyncio

from agent_client.builtin import StaticAgent
from agent_client.runtime import AgentReport, AgentRuntime
from protocol.cli import configure_logging

log = logging.getLogger(__name__)


def random_distribution(rng: np.random.Generator, support: int, vocabulary: int) -> dict[str, float]:
    tokens = rng.choice(vocabulary, size=support, replace=False)
    probs = rng.dirichlet(np.ones(support))
    probs /= probs.sum()
    return {f" w{t}": float(p) for t, p in zip(tokens, probs, strict=True)}


async def run_swarm(market: str, feed: str, count: int, prefix: str, support: int, seed: int) -> list[AgentReport]:
    rng = np.random.default_rng(seed)
    context = zmq.asyncio.Context()
    runtimes = [
        AgentRuntime(
            StaticAgent(random_distribution(rng, support, 4 * support), float(rng.uniform(0.5, 2.0))),
            f"{prefix}{i}",
            market,
            feed,
            context=context,
        )
        for i in range(count)
    ]
    try:
        outcomes = await asyncio.gather(*(r.run() for r in runtimes), return_exceptions=True)
    finally:
        context.destroy(linger=0)
    for runtime, outcome in zip(runtimes, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            log.error("agent %s stopped: %s", runtime.name, outcome)
    return [runtime.report for runtime in runtimes]


def summary(report: AgentReport) -> dict[str, Any]:
    statuses = Counter(r.status for r in report.rounds.values())
    return {
        "name": report.name,
        "results": sum(1 for r in report.rounds.values() if r.token is not None),
        "rounds_seen": sorted(report.rounds),
        "statuses": dict(statuses),
        "closed": report.closed_reason,
        "text_length": len(report.text),
        "verification_failures": report.verification_failures,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent_client.swarm", description=__doc__)
    parser.add_argument("--market", default="tcp://127.0.0.1:5555")
    parser.add_argument("--feed", default="tcp://127.0.0.1:5556")
    parser.add_argument("--count", type=int, required=True, help="number of agents in this process")
    parser.add_argument("--prefix", default="swarm", help="agent names are PREFIX0, PREFIX1, ...")
    parser.add_argument("--support", type=int, default=8, help="tokens per agent distribution")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-json", type=Path)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    reports = asyncio.run(run_swarm(args.market, args.feed, args.count, args.prefix, args.support, args.seed))
    if args.report_json:
        args.report_json.write_text(json.dumps([summary(r) for r in reports]))
    return 0 if all(r.closed_reason for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())

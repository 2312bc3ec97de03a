"""Many agents in one process, for load tests (the command is ``python -m cli.swarm``).

Each agent is a full :class:`AgentRuntime` (its own DEALER and SUB) on one shared ZeroMQ context,
bidding a random static distribution over ``support`` tokens. :func:`summary` says, per agent, how
many results it received and how its bids were answered, to check nothing was lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import numpy as np
import zmq.asyncio

from agent_client.builtin import StaticAgent
from agent_client.runtime import AgentReport, AgentRuntime

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
    """Per agent, over every market it took part in: results received, how its bids were answered."""
    rounds = [r for market in report.markets.values() for r in market.rounds.values()]
    return {
        "name": report.name,
        "markets": len(report.markets),
        "results": sum(1 for r in rounds if r.token is not None),
        "statuses": dict(Counter(r.status for r in rounds)),
        "closed": report.all_closed,
        "verification_failures": report.verification_failures,
    }

"""Many agents in one process: load tests (the command is ``python -m cli.swarm``), or agents that
share one loaded model (:func:`run_agents`, see ``examples/shared_model.py``).

Each agent is a full :class:`AgentRuntime` (its own DEALER and SUB) on one shared ZeroMQ context;
the load-test swarm's bid random static distributions over ``support`` tokens. :func:`summary` says, per agent, how
many results it received and how its bids were answered, to check nothing was lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import zmq.asyncio

from agent_client.agent import Agent
from agent_client.builtin import StaticAgent
from agent_client.report import AgentReport
from agent_client.runtime import AgentRuntime

log = logging.getLogger(__name__)


def random_distribution(rng: np.random.Generator, support: int, vocabulary: int) -> dict[str, float]:
    tokens = rng.choice(vocabulary, size=support, replace=False)
    probs = rng.dirichlet(np.ones(support))
    probs /= probs.sum()
    return {f" w{t}": float(p) for t, p in zip(tokens, probs, strict=True)}


async def run_agents(agents: Mapping[str, Agent], market: str, feed: str) -> list[AgentReport]:
    """Run every agent (name -> agent) as its own runtime in this process, on one ZeroMQ context,
    until their markets close; their reports in the same order."""
    context = zmq.asyncio.Context()
    runtimes = [AgentRuntime(agent, name, market, feed, context=context) for name, agent in agents.items()]
    try:
        outcomes = await asyncio.gather(*(r.run() for r in runtimes), return_exceptions=True)
    finally:
        context.destroy(linger=0)
    for runtime, outcome in zip(runtimes, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            log.error("agent %s stopped: %s", runtime.name, outcome)
    return [runtime.report for runtime in runtimes]


async def run_swarm(market: str, feed: str, count: int, prefix: str, support: int, seed: int) -> list[AgentReport]:
    """``count`` static agents bidding random distributions over ``support`` tokens."""
    rng = np.random.default_rng(seed)
    agents = {
        f"{prefix}{i}": StaticAgent(random_distribution(rng, support, 4 * support), float(rng.uniform(0.5, 2.0)))
        for i in range(count)
    }
    return await run_agents(agents, market, feed)


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

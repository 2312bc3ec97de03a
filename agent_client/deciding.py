"""Handing a round to the user's agent: its ``decide`` asked without ever blocking the runtime.

Async ``decide`` methods run as tasks; sync ones in a worker thread, one at a time per market (a
market whose previous decision is still running misses the round); an agent that declares it never
blocks (``Agent.blocking = False``, the built-in ones) is asked on the runtime's own thread. Every
decision is abandoned at the round's deadline (a slow agent just misses the round), and an agent
that raises misses the round too (logged).
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from agent_client.agent import Agent, Bid, RoundContext, is_async
from agent_client.report import RoundRecord
from agent_client.traded_market import TradedMarket

log = logging.getLogger(__name__)


async def ask_agent(
    agent: Agent, market: TradedMarket, context: RoundContext, remaining: float, record: RoundRecord
) -> Bid | None:
    """The agent's bid for ``context``'s round, or None (it sat out, was too slow, or failed:
    ``record.status`` says which)."""
    try:
        if is_async(agent):
            outcome = agent.decide(context)
            assert asyncio.iscoroutine(outcome) or isinstance(outcome, asyncio.Future)
            async with asyncio.timeout(remaining):  # (not wait_for: see MarketClient.request)
                return await outcome
        if not agent.blocking:
            return cast(Bid | None, agent.decide(context))
        if market.thinking is not None and not market.thinking.done():
            record.status = "missed (still thinking)"
            return None
        market.thinking = asyncio.get_running_loop().run_in_executor(None, agent.decide, context)  # type: ignore[arg-type]
        async with asyncio.timeout(remaining):
            return await asyncio.shield(market.thinking)
    except TimeoutError:
        record.status = "missed (too slow)"
    except Exception:
        record.status = "agent error"
        log.exception("market %s round %d: agent.decide raised", market.id, context.round)
    return None

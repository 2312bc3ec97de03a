"""Handing a round to the user's agent: its ``decide`` asked without ever blocking the runtime, and
its bid sealed, sent and its answer recorded.

Async ``decide`` methods run as tasks; sync ones in a worker thread, one at a time per market (a
market whose previous decision is still running misses the round); an agent that declares it never
blocks (``Agent.blocking = False``, the built-in ones) is asked on the runtime's own thread. Every
decision is abandoned at the round's deadline (a slow agent just misses the round), and an agent
that raises misses the round too (logged).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import cast

from agent_client.agent import Agent, Bid, RoundContext, is_async
from agent_client.open_bids import OpenBids
from agent_client.report import RoundRecord
from agent_client.shard_link import ShardLinks
from agent_client.traded_market import TradedMarket
from agent_client.verify import OwnBid
from protocol.messages import BidAccepted, Error, RoundOpen, seal_bid

log = logging.getLogger(__name__)

DEADLINE_MARGIN = 0.1  # fraction of the round's timeout kept free for the bid to travel


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


async def decide_and_bid(
    agent: Agent,
    name: str,
    market: TradedMarket,
    announcement: RoundOpen,
    context_for: Callable[[float], RoundContext],
    open_bids: OpenBids,
    links: ShardLinks,
) -> None:
    """One round of one market: the agent asked within the round's time (``context_for(seconds
    left)`` tells it what it needs), its bid sealed and sent to the market's shard, the answer recorded.
    The bid is held open from before it is sent: its result may be broadcast before its acknowledgement."""
    remaining = min(announcement.timeout, announcement.deadline - time.time()) * (1 - DEADLINE_MARGIN)
    record = market.report.record(announcement.round)
    if remaining <= 0:
        record.status = "missed (joined late)"
        return
    started = time.monotonic()
    bid = await ask_agent(agent, market, context_for(remaining), remaining, record)
    if bid is None:
        return
    info = market.info
    try:
        message = seal_bid(announcement.round, bid.distribution, float(bid.amount), info.rules.max_support, info.id)
    except ValueError as exc:
        record.status = "invalid (not sent)"
        log.error("market %s round %d: the agent's bid is invalid: %s", info.id, announcement.round, exc)
        return
    record.bid = float(bid.amount)
    open_bids.add(info.id, announcement.round, OwnBid(name, dict(bid.distribution), float(bid.amount)))
    left = max(remaining - (time.monotonic() - started), 0.05) + DEADLINE_MARGIN * announcement.timeout
    try:
        reply = await links.links[market.link].client.request(message, left)
    except (TimeoutError, ConnectionResetError):
        record.status = "no answer"
        return
    if isinstance(reply, BidAccepted):
        record.status = "accepted"
        market.bid_acknowledged(announcement)
    elif isinstance(reply, Error):
        record.status = reply.code
        open_bids.take(info.id, announcement.round)
        log.warning("market %s round %d: bid refused: %s %s", info.id, announcement.round, reply.code,
                    reply.message)  # fmt: skip

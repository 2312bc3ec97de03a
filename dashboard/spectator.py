"""Follow an exchange as a spectator (never registers): the feed of its markets and ``sync_request``
to fill gaps, plus a ``list_markets`` every ``poll`` seconds that finds new markets and says whether
the auctioneer answers. An auctioneer that goes away and comes back (a restart on its ledger) is
picked up again by itself: the sockets reconnect, the seq gap triggers a resync.
"""

from __future__ import annotations

import asyncio
import logging

import zmq.asyncio

from dashboard.board import RECENT_CLOSED, Board
from protocol.client import FeedFollower, MarketClient, list_markets

log = logging.getLogger(__name__)


async def spectate(board: Board, endpoint: str, feed: str, market: str | None = None, poll: float = 1.0) -> None:
    """Fold the exchange's feed into ``board`` until cancelled; ``market``: only that market."""
    context = zmq.asyncio.Context()
    client = MarketClient(context, endpoint)
    client.connect()
    follower = FeedFollower(context, feed, client, notices_seq=0)
    try:
        await asyncio.gather(_list_markets(board, client, follower, market, poll), _read_feed(board, follower))
    finally:
        follower.close()
        client.close()
        context.destroy(linger=0)


async def _list_markets(
    board: Board, client: MarketClient, follower: FeedFollower, only: str | None, poll: float
) -> None:
    while True:
        try:
            listing = await list_markets(client, timeout=max(poll, 1.0))
        except (TimeoutError, ConnectionError) as exc:
            if board.reachable:
                log.warning("the auctioneer does not answer (%s): retrying", exc or type(exc).__name__)
            board.set_reachable(False)
        else:
            board.set_reachable(True)
            shown = [s for s in listing.markets if only is None or s.market.id == only]
            board.apply(listing.model_copy(update={"markets": shown}))
            closed = [s for s in shown if s.closed is not None][-RECENT_CLOSED:]
            for status in [s for s in shown if s.closed is None] + closed:
                follower.follow(status.market.id)
        await asyncio.sleep(poll)


async def _read_feed(board: Board, follower: FeedFollower) -> None:
    async for event in follower.events():
        board.apply(event)

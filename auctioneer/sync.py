"""Answering ``sync_request``: a market's snapshot and the results its requester missed (the ZeroMQ
guide's Clone pattern), for an open market from memory and for an ended one from the ledger.

The stored results go out as the very bytes they were broadcast as (spliced into the reply, never
decoded or packed again), paged at :data:`SYNC_RESULT_BYTES` so that one request bounds what it
makes the auctioneer read and hold.
"""

from __future__ import annotations

from typing import Any

from auctioneer.ledger import Store, StoredMarket
from auctioneer.market import Market
from protocol import ErrorCode, ProtocolError
from protocol.codec import encode_with_encoded
from protocol.messages import SyncReply, SyncRequest

# A sync_reply carries stored results up to this many bytes (at least one); the rest is paged (``more``).
SYNC_RESULT_BYTES = 1024 * 1024


def sync_reply(request: SyncRequest, market_id: str | None, market: Market | None, ledger: Store) -> bytes:
    """The encoded ``sync_reply`` to ``request`` for ``market_id`` (its open ``market``, if it is
    open), or ``UNKNOWN_MARKET``."""
    stored = None if market is not None or market_id is None else ledger.market(market_id)
    if market_id is None or (market is None and stored is None):
        raise ProtocolError(ErrorCode.UNKNOWN_MARKET, f"no market {market_id!r}", "market")
    results, more = ledger.results_since(market_id, request.since_seq, request.limit, SYNC_RESULT_BYTES)
    reply: dict[str, Any] = {"results": [], "more": more, "market": market_id, "re": request.id}
    snapshot = SyncReply.model_validate({**reply, **(_open(market) if market is not None else _ended(stored))})
    return encode_with_encoded(snapshot, "results", results)


def _open(market: Market) -> dict[str, Any]:
    return {
        "seq": market.seq,
        "last_round": market.last_round,
        "prompt": market.settings.prompt,
        "text": market.text,
        "tokens": market.tokens,
        "balances": market.balances,
        "open_round": market.current.announcement if market.current else None,
        "closed": market.closed,
    }


def _ended(stored: StoredMarket | None) -> dict[str, Any]:
    assert stored is not None
    return {
        "seq": stored.seq,
        "last_round": stored.last_round,
        "prompt": stored.prompt,
        "text": stored.text,
        "tokens": stored.tokens,
        "balances": stored.balances,
        "closed": stored.closed,
    }

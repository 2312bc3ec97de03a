"""Admitting sealed bids: who may bid where, in which round, for how much, each checked once per bid.

A bid is checked in two steps, in this order (SPEC section 5 lists the codes in the same order):

1. :func:`admit`, from the request's ``market``, ``round`` and ``bid`` alone, before its
   distribution is even decoded (the codec's precheck, so a late or misdirected bid costs little
   however large): the sender is registered, the market exists and is open, invites the sender, the
   round is the open one, and the sender has not bid in it yet;
2. :func:`accept`, once the bid is decoded: its amount and distribution against the market's limits,
   then its reservation against the agent's budget (the most the market's payment rule can charge
   for it), then the round takes it.

The server hands step 1's :class:`Admission` to step 2, so nothing is checked twice; a bid that
comes without one (an in-process caller) is admitted first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from auctioneer.market import Market
from auctioneer.open_round import OpenRound
from protocol import ErrorCode, ProtocolError
from protocol.messages import BidAccepted, SealedBid, assemble

if TYPE_CHECKING:
    from auctioneer.exchange import Exchange


@dataclass(frozen=True)
class Admission:
    """A bid's sender, market and open round, admitted before its distribution was read."""

    agent: str
    market: Market
    round: OpenRound


def admit(exchange: Exchange, peer: bytes, fields: Mapping[str, Any]) -> Admission | None:
    """Step 1 for a ``sealed_bid`` that is still a decoded map: the refusal, or its admission (None
    if its fields are of the wrong type: the message's own checks word that)."""
    name = exchange.registry.name_of(peer)
    if name is None:
        raise ProtocolError(ErrorCode.NOT_REGISTERED, "send hello first")
    market, number, amount = fields.get("market"), fields.get("round"), fields.get("bid")
    if (
        (market is None or isinstance(market, str))
        and type(number) is int
        and 1 <= number < 2**63
        and isinstance(amount, int | float)
        and math.isfinite(amount)
    ):
        found = exchange.open_market_named(market)
        return Admission(name, found, found.admit(name, number, float(amount)))
    return None


def accept(exchange: Exchange, name: str, bid: SealedBid, admission: Admission | None, now: float) -> BidAccepted:
    """Step 2: check ``bid``'s content, reserve its amount and take it into its round."""
    if admission is None:
        market = exchange.open_market_named(bid.market)
        admission = Admission(name, market, market.admit(name, bid.round, bid.bid))
    market = admission.market
    reference = market.check_bid(name, bid, admission.round)
    if not reference:
        exchange.accounts.reserve(name, market.reservation(bid.bid))
    market.accept(name, bid, reference)
    exchange.round_clock.bid_taken(market, now)
    # Every field from values already checked: assembled, not validated again (one per bid).
    return assemble(BidAccepted, type="bid_accepted", id=None, re=bid.id, round=bid.round, market=market.id)

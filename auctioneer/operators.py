"""Operators: who may open and close markets and set budgets, and their requests' answers.

Under CurveZMQ an operator is a key the exchange names in ``operators``; without it, any peer on
``operator_networks`` (loopback by default). Anyone else is refused with ``UNAUTHORIZED`` before
the request is looked at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from auctioneer.settings import ExchangeSettings, MarketSpec
from protocol import ErrorCode, ProtocolError
from protocol.messages import AccountStatus, CloseMarket, MarketStatusReply, OpenMarket, SetBudget

if TYPE_CHECKING:
    from auctioneer.exchange import Exchange

OperatorRequest = OpenMarket | CloseMarket | SetBudget


def authorise_operator(settings: ExchangeSettings, identity: str | None, address: str | None) -> None:
    """Refuse (``UNAUTHORIZED``) a peer that is not one of the exchange's operators."""
    if settings.curve_secret is not None:
        if identity not in settings.operators:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"key {identity!r} is not an operator of this exchange")
    elif address is None or not settings.is_operator_address(address):
        raise ProtocolError(ErrorCode.UNAUTHORIZED, f"operator requests are not accepted from {address}")


def open_market(exchange: Exchange, request: OpenMarket) -> MarketStatusReply:
    spec = MarketSpec(
        settings=request.settings,
        id=request.market,
        agents=request.agents,
        reference_agent=request.reference_agent,
        shard=request.shard,
    )
    return MarketStatusReply(status=exchange.place_market(spec), re=request.id)


def close_market(exchange: Exchange, request: CloseMarket) -> MarketStatusReply:
    return MarketStatusReply(status=exchange.close_market(request.market), re=request.id)


def set_budget(exchange: Exchange, request: SetBudget) -> AccountStatus:
    account = exchange.set_budget(request.agent, request.budget)
    return AccountStatus(
        agent=request.agent, budget=account.budget, spent=account.spent, reserved=account.reserved, re=request.id
    )

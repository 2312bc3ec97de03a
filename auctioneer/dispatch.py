"""The exchange's answers to requests: one table from message type to handler.

Every request is one of three kinds, and the table says which: **open** to anyone (``hello``,
``sync_request``, ``list_markets``), **agents'** (``ping``, ``sealed_bid``: the connection must have
registered, ``NOT_REGISTERED`` otherwise, also what an agent's heartbeat gets after an auctioneer
restart), and **operators'** (``open_market``, ``close_market``, ``set_budget``: authorised first,
``auctioneer.operators``). A type the table lacks is ``UNKNOWN_TYPE``. A refused request changes
nothing and is answered with its ``error``; every reply echoes the request's ``id`` as ``re``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from auctioneer import admission, operators
from auctioneer.admission import Admission
from auctioneer.sync import sync_reply
from protocol import ErrorCode, ProtocolError
from protocol.messages import Hello, MarketList, Message, Pong, SyncRequest, Welcome, assemble, refusal

if TYPE_CHECKING:
    from auctioneer.exchange import Exchange


class Request(NamedTuple):
    """One decoded request and who sent it: its connection (``peer``, the routing id), its CurveZMQ
    key name and network address, the name it registered (if it did), and its bid's admission."""

    peer: bytes
    message: Any
    identity: str | None
    address: str | None
    now: float
    agent: str | None
    admission: Admission | None


Reply = Message | bytes
Handler = Callable[["Exchange", Request], Reply]


def welcome(exchange: Exchange, request: Request) -> Welcome:
    hello: Hello = request.message
    _, secret = exchange.registry.register(request.peer, hello, request.identity, request.address, request.now)
    account = exchange.accounts[hello.name]
    default = exchange.markets.get(exchange.default_market or "")
    legacy: dict[str, Any] = {}
    if default is not None:  # the default market, as revision 1.2 describes it
        settings = default.settings
        legacy = {
            "market": default.id,
            "prompt": settings.prompt,
            "seq": default.seq,
            "round": default.current.number if default.current else default.last_round,
            "mechanism": default.mechanism,
            "max_bid": settings.max_bid,
            "max_support": settings.max_support,
            "reference_weight": settings.effective_reference_weight,
        }
    return Welcome(
        name=hello.name,
        resume=secret,
        budget=account.budget,
        spent=account.spent,
        heartbeat_interval=exchange.settings.heartbeat_interval,
        exchange_seq=exchange.exchange_seq,
        markets=[
            *(market.info for market in exchange.markets.values() if market.invites(hello.name)),
            *exchange.directory.invited(hello.name),
        ],
        re=hello.id,
        shards=exchange.directory.shards or None,
        **legacy,
    )


def sync(exchange: Exchange, request: Request) -> bytes:
    message: SyncRequest = request.message
    market_id = message.market or exchange.default_market
    return sync_reply(message, market_id, exchange.markets.get(market_id or ""), exchange.ledger)


def list_markets(exchange: Exchange, request: Request) -> MarketList:
    statuses = [market.status() for market in exchange.markets.values()]
    statuses += [*exchange.directory.statuses(), *exchange.recent]
    return MarketList(
        seq=exchange.exchange_seq, markets=statuses, default=exchange.default_market, re=request.message.id
    )


def pong(exchange: Exchange, request: Request) -> Pong:
    assert request.agent is not None
    default = exchange.markets.get(exchange.default_market or "")
    account = exchange.accounts[request.agent]
    return assemble(  # the heartbeat's reply, from the exchange's own numbers: not validated again
        Pong,
        type="pong",
        id=None,
        re=request.message.id,
        seq=default.seq if default else exchange.exchange_seq,
        exchange_seq=exchange.exchange_seq,
        spent=account.spent,
        reserved=account.reserved,
        budget=account.budget,
    )


def sealed_bid(exchange: Exchange, request: Request) -> Message:
    assert request.agent is not None
    return admission.accept(exchange, request.agent, request.message, request.admission, request.now)


def operator(handler: Callable[[Exchange, Any], Message]) -> Handler:
    """``handler`` of an operator's request, refused unless its sender is an operator."""

    def authorised(exchange: Exchange, request: Request) -> Reply:
        operators.authorise_operator(exchange.settings, request.identity, request.address)
        return handler(exchange, request.message)

    return authorised


OPEN: dict[str, Handler] = {"hello": welcome, "sync_request": sync, "list_markets": list_markets}
AGENTS: dict[str, Handler] = {"ping": pong, "sealed_bid": sealed_bid}
OPERATORS: dict[str, Handler] = {
    "open_market": operator(operators.open_market),
    "close_market": operator(operators.close_market),
    "set_budget": operator(operators.set_budget),
}
HANDLERS = {**OPEN, **AGENTS, **OPERATORS}


def dispatch(
    exchange: Exchange,
    peer: bytes,
    message: Message,
    identity: str | None,
    address: str | None,
    admitted: Admission | None,
) -> Reply:
    """Answer one decoded request (its refusal, if it is refused)."""
    now = exchange.clock()
    agent = exchange.registry.heard_from(peer, now)
    try:
        handler = HANDLERS.get(message.type)
        if handler is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"the auctioneer does not accept {message.type!r}", "type")
        if agent is None and message.type in AGENTS:
            raise ProtocolError(ErrorCode.NOT_REGISTERED, "send hello first")
        return handler(exchange, Request(peer, message, identity, address, now, agent, admitted))
    except ProtocolError as exc:
        return refusal(exc, message.id)

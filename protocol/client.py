"""The reference client side of the protocol, used by agents and observers alike.

:class:`MarketClient` does request/reply on the market socket (DEALER, request ids, timeouts,
reconnect with the same routing id). :class:`FeedFollower` reads the feed of any number of markets
on one SUB socket (one topic per market, plus the exchange's notices), each market in ``seq``
order with no gaps: on a gap, a newly followed market or a heartbeat ahead of it, it asks for that
market's ``sync_reply`` (the ZeroMQ guide's Clone pattern) and replays what was missed; a gap in
the exchange's notices is filled with a ``market_list``; a market the exchange no longer knows is
told as :class:`MarketUnknown` and let go.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

import zmq
import zmq.asyncio

from protocol.codec import LIMITS, decode, encode
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (
    Error,
    ExchangeHeartbeat,
    Heartbeat,
    ListMarkets,
    MarketClosed,
    MarketEnded,
    MarketList,
    MarketOpened,
    Message,
    RoundOpen,
    RoundResult,
    SyncReply,
    SyncRequest,
)
from protocol.sockets import QueuedFirst, make_socket
from protocol.topics import EXCHANGE_TOPIC, market_topic, split_frame, subscription

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MarketUnknown:
    """A followed market the exchange answers ``UNKNOWN_MARKET`` for (it came back on another ledger,
    or never held it): it is no longer followed."""

    market: str
    message: str


MarketEvent = SyncReply | RoundOpen | RoundResult | MarketClosed
ExchangeEvent = MarketOpened | MarketEnded | MarketList
FeedEvent = MarketEvent | ExchangeEvent | MarketUnknown
SocketSetup = Callable[[zmq.asyncio.Socket], None]
Reply = TypeVar("Reply", bound=Message)
FROM_AUCTIONEER = LIMITS.from_auctioneer


class MarketClient:
    """Request/reply with the auctioneer over a DEALER socket."""

    def __init__(self, context: zmq.asyncio.Context, endpoint: str, setup: SocketSetup | None = None) -> None:
        self.context = context
        self.endpoint = endpoint
        self.setup = setup
        self.routing_id = uuid.uuid4().hex.encode()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._socket: zmq.asyncio.Socket | None = None
        self._receiver: asyncio.Task[None] | None = None

    def connect(self) -> None:
        """(Re)create the DEALER socket; the routing id stays, so the auctioneer sees the same peer."""
        self.close()
        sock = make_socket(self.context, zmq.DEALER, max_message_bytes=FROM_AUCTIONEER.max_message_bytes)
        sock.setsockopt(zmq.ROUTING_ID, self.routing_id)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if self.setup is not None:
            self.setup(sock)
        sock.connect(self.endpoint)
        self._socket = sock
        self._receiver = asyncio.create_task(self._receive(QueuedFirst(sock)))

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
            self._receiver = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionResetError("market connection reset"))
        self._pending.clear()

    async def request(self, message: Message, timeout: float) -> Message:
        """Send ``message`` with a fresh id and wait for the reply carrying it as ``re``."""
        if self._socket is None:
            self.connect()
        assert self._socket is not None
        request_id = next(self._ids)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
            # arrives with the reply, and a heartbeat loop cancelled that way never ends.
            async with asyncio.timeout(timeout):
                return await self._send_and_wait(self._socket, message, request_id, future)
        except zmq.ZMQError as exc:  # the socket was replaced by a reconnect while this request used it
            raise ConnectionResetError(f"market socket closed ({exc})") from None
        finally:
            self._pending.pop(request_id, None)

    @staticmethod
    async def _send_and_wait(
        sock: zmq.asyncio.Socket, message: Message, request_id: int, future: asyncio.Future[Message]
    ) -> Message:
        await sock.send(encode(message.model_copy(update={"id": request_id})))
        return await future

    async def _receive(self, replies: QueuedFirst) -> None:
        while True:
            data = await replies.recv()
            try:
                reply = decode(data, FROM_AUCTIONEER)
            except ProtocolError as exc:
                log.warning("undecodable reply from the auctioneer: %s", exc)
                continue
            future = self._pending.get(reply.re) if reply.re is not None else None
            if future is not None and not future.done():
                future.set_result(reply)


class FeedFollower:
    """The feed of the markets it follows, each in ``seq`` order, gaps filled from ``sync_reply``.

    A :class:`SyncReply` event (a market's snapshot of text, tokens and balances) precedes what a
    resync replays; every market event carries its ``market``. With ``notices``, the exchange's
    ``market_opened`` and ``market_ended`` come too, and a :class:`MarketList` after a gap in them.
    """

    def __init__(
        self,
        context: zmq.asyncio.Context,
        endpoint: str,
        client: MarketClient,
        setup: SocketSetup | None = None,
        request_timeout: float = 5.0,
        notices_seq: int | None = None,
    ) -> None:
        """``notices_seq``: follow the exchange's notices from this seq on (None: do not follow them)."""
        self.client = client
        self.request_timeout = request_timeout
        self._endpoint = endpoint
        self._last: dict[str, int] = {}
        self._heard: dict[str, float] = {}  # market -> when its topic last brought anything (monotonic)
        self._stale: list[str] = []  # markets to resync before reading on: newly followed, or behind
        self._notices_seq = notices_seq
        self.socket = make_socket(context, zmq.SUB, max_message_bytes=FROM_AUCTIONEER.max_message_bytes)
        if setup is not None:
            setup(self.socket)
        if notices_seq is not None:
            self.socket.setsockopt(zmq.SUBSCRIBE, subscription(EXCHANGE_TOPIC))
        self.socket.connect(endpoint)
        self._broadcasts = QueuedFirst(self.socket)

    def follow(self, market: str, since_seq: int = 0) -> None:
        """Follow a market from its beginning (its snapshot and history come first, by a sync), or
        after ``since_seq`` (it was followed elsewhere up to there: a market that moved shards)."""
        if market in self._last:
            return
        self._last[market] = since_seq
        self._heard[market] = time.monotonic()
        self.socket.setsockopt(zmq.SUBSCRIBE, subscription(market_topic(market)))
        self._stale.append(market)

    def subscribe_silent(self, silent_for: float) -> list[str]:
        """Subscribe again to every followed market whose topic brought nothing (not even a
        heartbeat) for ``silent_for`` seconds, and resync it; the markets subscribed again. The
        exchange applies a subscription only once it has checked it, so one that reached it at a bad
        moment (around a reconnection of this feed) is sent again rather than waited for."""
        now = time.monotonic()
        silent = [market for market in self._last if now - self._heard.get(market, now) > silent_for]
        for market in silent:
            topic = subscription(market_topic(market))
            self.socket.setsockopt(zmq.UNSUBSCRIBE, topic)
            self.socket.setsockopt(zmq.SUBSCRIBE, topic)
            self._heard[market] = now
            self.resync(market)
        return silent

    @property
    def catching_up(self) -> bool:
        """Some followed market waits for a resync (a gap, a new follow, or its end)."""
        return any(market in self._last for market in self._stale)

    @property
    def followed(self) -> frozenset[str]:
        """The markets followed now."""
        return frozenset(self._last)

    def notices_from(self, seq: int) -> None:
        """Take the exchange's notices from ``seq`` on (a new ``welcome`` says where they stand: after
        a restart on another ledger they count from 0 again; what came before, the welcome lists)."""
        if self._notices_seq is not None:
            self._notices_seq = seq

    def position(self, market: str) -> int:
        """The last seq of ``market`` applied (0 if it is not followed)."""
        return self._last.get(market, 0)

    def unfollow(self, market: str) -> None:
        """Stop following a market: its broadcasts are no longer subscribed to."""
        self._heard.pop(market, None)
        if self._last.pop(market, None) is not None:
            self.socket.setsockopt(zmq.UNSUBSCRIBE, subscription(market_topic(market)))

    def reconnect(self) -> None:
        """Drop the feed connection and make a new one on the same socket (a pending receive keeps
        waiting). Broadcasts in flight are lost; the next one reveals the gap and triggers a resync."""
        self.socket.disconnect(self._endpoint)
        self.socket.connect(self._endpoint)

    def close(self) -> None:
        self.socket.close(linger=0)

    async def events(self) -> AsyncIterator[FeedEvent]:
        """Every followed market's events in order, forever (the caller stops when it has what it needs)."""
        while True:
            while self._stale:
                # The market stays stale (``catching_up``) until its resync is done: its last event
                # is held back until then, so a caller that stops once nothing is catching up has
                # applied every replayed result first.
                market = self._stale[0]
                last: MarketEvent | MarketUnknown | None = None
                if market in self._last:
                    try:
                        async for event in self._resync(market):
                            if last is not None:
                                yield last
                            last = event
                    except ProtocolError as exc:  # UNKNOWN_MARKET: it came back on another ledger
                        self.unfollow(market)
                        last = MarketUnknown(market, exc.message)
                self._stale.pop(0)
                if last is not None:
                    yield last
            try:
                topic, payload = split_frame(await self._broadcasts.recv())
                message = decode(payload, FROM_AUCTIONEER)
            except ProtocolError as exc:
                log.warning("undecodable feed message: %s", exc)
                continue
            if topic == EXCHANGE_TOPIC:
                async for notice in self._notice(message):
                    yield notice
            elif topic is not None:
                ordered = self._in_order(message)
                if ordered is not None:
                    yield ordered

    def _in_order(self, message: Message) -> MarketEvent | None:
        """The message if it is the next of its market; None if old, or if it reveals a gap (the
        market is then resynced before anything else is read)."""
        market = getattr(message, "market", None)
        if market not in self._last or not isinstance(message, Heartbeat | RoundOpen | RoundResult | MarketClosed):
            return None
        self._heard[market] = time.monotonic()
        last = self._last[market]
        if isinstance(message, Heartbeat):
            if message.seq > last and market not in self._stale:
                self._stale.append(market)
            return None
        if message.seq <= last:
            return None
        # A market's first broadcast after an auctioneer restart skips one seq, and says so.
        resumed = isinstance(message, RoundOpen | MarketClosed) and message.resumed and message.seq == last + 2
        if message.seq > last + 1 and not resumed:
            log.info("feed gap in market %s after seq %d: resyncing", market, last)
            if market not in self._stale:
                self._stale.append(market)
            return None
        self._last[market] = message.seq
        return message

    async def _notice(self, message: Message) -> AsyncIterator[ExchangeEvent]:
        """The exchange's notices in order (a ``market_list`` after a gap). A followed market that
        ended is resynced, so its ``market_closed`` comes even if its own broadcast was lost."""
        if self._notices_seq is None or not isinstance(message, MarketOpened | MarketEnded | ExchangeHeartbeat):
            return
        if message.seq <= self._notices_seq:
            return
        if message.seq == self._notices_seq + 1 and not isinstance(message, ExchangeHeartbeat):
            self._notices_seq = message.seq
            if isinstance(message, MarketEnded):
                self.resync(message.market)
            yield message
            return
        log.info("gap in the exchange's notices after seq %d: listing markets", self._notices_seq)
        listing = await self._request(ListMarkets(), MarketList)
        self._notices_seq = max(self._notices_seq, listing.seq)
        for status in listing.markets:
            if status.closed is not None:
                self.resync(status.market.id)
        yield listing

    def resync(self, market: str) -> None:
        """Resync ``market`` (if followed) before the next feed message is read on."""
        if market in self._last and market not in self._stale:
            self._stale.append(market)

    async def _resync(self, market: str) -> AsyncIterator[MarketEvent]:
        reply: SyncReply | None = None
        while reply is None or reply.more:
            reply = await self._request(SyncRequest(since_seq=self._last.get(market, 0), market=market), SyncReply)
            yield reply
            for result in reply.results:
                if result.seq > self._last.get(market, 0):
                    self._last[market] = result.seq
                    yield result
        if reply.open_round is not None and reply.open_round.seq > self._last.get(market, 0):
            yield reply.open_round
        if reply.closed is not None:
            yield reply.closed
        if market in self._last:
            self._last[market] = max(self._last[market], reply.seq)

    async def _request(self, message: Message, kind: type[Reply]) -> Reply:
        """The reply to ``message``, retried with backoff while the auctioneer is silent or refuses
        for now (``LIMIT_REACHED``); a market it does not know is :class:`ProtocolError` at once."""
        delay = 0.1
        while True:
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                reply = await self.client.request(message, self.request_timeout)
                if isinstance(reply, kind):
                    return reply
                if isinstance(reply, Error) and reply.code == ErrorCode.UNKNOWN_MARKET:
                    raise ProtocolError(ErrorCode.UNKNOWN_MARKET, reply.message, reply.field)
                refusal = f"{reply.code}: {reply.message}" if isinstance(reply, Error) else reply.type
                log.warning("%s answered with %s: retrying", message.type, refusal)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def list_markets(client: MarketClient, timeout: float = 5.0) -> MarketList:
    reply = await client.request(ListMarkets(), timeout)
    if not isinstance(reply, MarketList):
        raise ConnectionError(f"unexpected reply to list_markets: {reply.type}")
    return reply


async def follow_market(market: str | None, endpoint: str, feed: str, on_event: Callable[[FeedEvent], None]) -> None:
    """Follow one market as a spectator (no registration) until it closes, calling ``on_event`` for
    every event in order, gaps filled by resyncs. ``market=None``: the exchange's default market,
    or its only one."""
    context = zmq.asyncio.Context()
    client = MarketClient(context, endpoint)
    client.connect()
    # The exchange's notices too: if the market's own closing broadcast is lost, its end still shows.
    follower = FeedFollower(context, feed, client, notices_seq=0)
    try:
        if market is None:
            market = await _default_market(client)
        follower.follow(market)
        async for event in follower.events():
            if isinstance(event, MarketUnknown):
                raise ProtocolError(ErrorCode.UNKNOWN_MARKET, event.message, "market")
            on_event(event)
            if isinstance(event, MarketClosed):
                return
    finally:
        follower.close()
        client.close()
        context.term()


async def _default_market(client: MarketClient) -> str:
    """The default market, or the only market; waits (retrying) while the exchange is unreachable.
    ``UNKNOWN_MARKET`` if it has none of either."""
    delay = 0.1
    while True:
        with contextlib.suppress(TimeoutError, ConnectionResetError, ConnectionError):
            listing = await list_markets(client)
            if listing.default is not None:
                return listing.default
            if len(listing.markets) == 1:
                return listing.markets[0].market.id
            raise ProtocolError(
                ErrorCode.UNKNOWN_MARKET,
                f"the exchange has {len(listing.markets)} markets and no default one: name one",
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def ask(endpoint: str, message: Message, setup: SocketSetup | None = None, timeout: float = 5.0) -> Message:
    """One request and its reply on a fresh connection (operators' and observers' one-off questions);
    ``TimeoutError`` if the auctioneer does not answer in time."""
    context = zmq.asyncio.Context()
    client = MarketClient(context, endpoint, setup)
    client.connect()
    try:
        return await client.request(message, timeout)
    finally:
        client.close()
        context.term()

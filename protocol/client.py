"""The reference client side of the protocol, used by agents and observers alike.

:class:`MarketClient` does request/reply on the market socket (DEALER, request ids, timeouts,
reconnect with the same routing id). :class:`FeedFollower` reads the feed in ``seq`` order with no
gaps: on a gap, a late join or a heartbeat ahead of it, it asks for a ``sync_reply`` (the ZeroMQ
guide's Clone pattern) and replays what was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Callable

import zmq
import zmq.asyncio

from protocol.codec import LIMITS, decode, encode
from protocol.errors import ProtocolError
from protocol.messages import Heartbeat, MarketClosed, Message, RoundOpen, RoundResult, SyncReply, SyncRequest
from protocol.sockets import make_socket

log = logging.getLogger(__name__)

FeedEvent = SyncReply | RoundOpen | RoundResult | MarketClosed
SocketSetup = Callable[[zmq.asyncio.Socket], None]
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
        self._receiver = asyncio.create_task(self._receive(sock))

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
            return await asyncio.wait_for(self._send_and_wait(self._socket, message, request_id, future), timeout)
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

    async def _receive(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            data = await sock.recv()
            try:
                reply = decode(data, FROM_AUCTIONEER)
            except ProtocolError as exc:
                log.warning("undecodable reply from the auctioneer: %s", exc)
                continue
            future = self._pending.get(reply.re) if reply.re is not None else None
            if future is not None and not future.done():
                future.set_result(reply)


class FeedFollower:
    """Feed messages in ``seq`` order, gaps filled from ``sync_reply``; a :class:`SyncReply` event
    (a snapshot of text, tokens and balances) precedes what a resync replays."""

    def __init__(
        self,
        context: zmq.asyncio.Context,
        endpoint: str,
        client: MarketClient,
        setup: SocketSetup | None = None,
        request_timeout: float = 5.0,
    ) -> None:
        self.client = client
        self.request_timeout = request_timeout
        self.last_seq = 0
        self._endpoint = endpoint
        self.socket = make_socket(context, zmq.SUB, max_message_bytes=FROM_AUCTIONEER.max_message_bytes)
        if setup is not None:
            setup(self.socket)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(endpoint)

    def reconnect(self) -> None:
        """Drop the feed connection and make a new one on the same socket (a pending receive keeps
        waiting). Broadcasts in flight are lost; the next one reveals the gap and triggers a resync."""
        self.socket.disconnect(self._endpoint)
        self.socket.connect(self._endpoint)

    def close(self) -> None:
        self.socket.close(linger=0)

    async def events(self) -> AsyncIterator[FeedEvent]:
        """Start with a sync (late joiners catch up), then follow the feed; ends after ``market_closed``."""
        async for event in self._resync():
            yield event
            if isinstance(event, MarketClosed):
                return
        while True:
            try:
                message = decode(await self.socket.recv(), FROM_AUCTIONEER)
            except ProtocolError as exc:
                log.warning("undecodable feed message: %s", exc)
                continue
            if isinstance(message, Heartbeat):
                behind = message.seq > self.last_seq
            elif isinstance(message, RoundOpen | RoundResult | MarketClosed):
                if message.seq <= self.last_seq:
                    continue
                behind = message.seq > self.last_seq + 1
                if not behind:
                    self.last_seq = message.seq
                    yield message
                    if isinstance(message, MarketClosed):
                        return
                    continue
            else:
                continue
            if behind:
                log.info("feed gap after seq %d: resyncing", self.last_seq)
                async for event in self._resync():
                    yield event
                    if isinstance(event, MarketClosed):
                        return

    async def _resync(self) -> AsyncIterator[FeedEvent]:
        while True:
            reply = await self._sync_reply()
            yield reply
            for result in reply.results:
                if result.seq > self.last_seq:
                    self.last_seq = result.seq
                    yield result
            if not reply.more:
                break
        if reply.open_round is not None and reply.open_round.seq > self.last_seq:
            yield reply.open_round
        if reply.closed is not None:
            yield reply.closed
        self.last_seq = max(self.last_seq, reply.seq)

    async def _sync_reply(self) -> SyncReply:
        delay = 0.1
        while True:
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                reply = await self.client.request(SyncRequest(since_seq=self.last_seq), self.request_timeout)
                if isinstance(reply, SyncReply):
                    return reply
                log.warning("unexpected reply to sync_request: %s", reply.type)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def follow_market(market: str, feed: str, on_event: Callable[[FeedEvent], None]) -> None:
    """Follow a market as a spectator (no registration) until it closes, calling ``on_event`` for
    every event in order, gaps filled by resyncs."""
    context = zmq.asyncio.Context()
    client = MarketClient(context, market)
    client.connect()
    follower = FeedFollower(context, feed, client)
    try:
        async for event in follower.events():
            on_event(event)
    finally:
        follower.close()
        client.close()
        context.term()

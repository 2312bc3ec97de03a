"""The auctioneer's network side: a ROUTER for requests, a PUB for the feed, and the exchange's clock.

One long-lived receive task answers requests (in batches, without a trip through the event loop
per message, the batch's replies sent together after it); the scheduler ticks the exchange at its
next deadline, or at once when a round became complete, and publishes what it queued (results only
after their commit); a heartbeat task publishes every open market's latest seq and the exchange's,
so subscribers can detect gaps.

Every broadcast goes out under its topic (``protocol.topics``); the default market's are also
published as plain frames for clients of revision 1.2.

What a peer can make the auctioneer do or hold is bounded here: requests pass their connection's
and their address's budgets (:mod:`auctioneer.peer_budget`) before they are decoded; replies never block (a reply to a
peer that vanished, or whose queue of unread replies is full, is dropped and counted); the feed
socket accepts only subscriptions to the exchange's own topics, of at most
:data:`MAX_SUBSCRIPTION_BYTES`; a connection that does not finish its ZeroMQ handshake within
:data:`HANDSHAKE_SECONDS` is closed; what connections may hold beyond that (their number per
address, the memory of unfinished multipart messages) is :mod:`auctioneer.connection_guard`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import NamedTuple

import zmq
import zmq.asyncio

from auctioneer.admission import Admission
from auctioneer.connection_guard import ConnectionGuard
from auctioneer.dispatch import OPERATORS
from auctioneer.exchange import Exchange
from auctioneer.metrics import AuctioneerMetrics
from auctioneer.peer_budget import PeerBudgets, ThrottledWarnings
from auctioneer.security import CurveServer
from protocol import ErrorCode, ProtocolError, encode
from protocol.codec import Limits, decode_request
from protocol.errors import UserError
from protocol.messages import AUCTIONEER_REQUESTS, Error, ExchangeNotice, Message, SyncRequest, refusal
from protocol.sockets import FEED_HIGH_WATER_MARK, make_socket
from protocol.topics import BROAD_SUBSCRIPTIONS, EXCHANGE_TOPIC, market_topic, subscribed_market, topic_frame

log = logging.getLogger(__name__)

DRAIN_BATCH = 256
REPLY_HIGH_WATER_MARK = 1000  # unread replies queued per peer; beyond, replies to it are dropped
REQUEST_HIGH_WATER_MARK = 1000  # unread requests queued per peer; beyond, libzmq stops reading it
MAX_SUBSCRIPTION_BYTES = 4096  # a subscription is a topic prefix (a market id: 64 bytes); CurveZMQ handshakes need room
HANDSHAKE_SECONDS = 5.0
SYNC_LIMITED = "this connection was sent its share of sync replies for now: retry in a second"
Observer = Callable[[Message], None]
# Flags as plain ints: pyzmq's send_multipart combines its enum flags in Python for every frame.
MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
LAST = int(zmq.NOBLOCK)
OVER_BUDGET = "requests over their connection's or address's budget dropped"


class Answering(NamedTuple):
    """Who sent a decoded request, as answering it needs."""

    peer: bytes
    identity: str | None
    address: str | None
    admitted: Admission | None


class EndpointError(UserError):
    """An endpoint the auctioneer must bind cannot be bound (in use, or not an address of this host)."""


class AuctioneerServer:
    """Serves one :class:`Exchange` on a market (ROUTER) and a feed (XPUB) endpoint, counting what
    it does in ``metrics`` if given."""

    def __init__(
        self, exchange: Exchange, observer: Observer | None = None, metrics: AuctioneerMetrics | None = None
    ) -> None:
        self.exchange = exchange
        self.settings = exchange.settings
        self.observer = observer
        self.metrics = metrics
        self._limits = Limits(self.settings.max_message_bytes, self.settings.max_support)
        self._budgets = PeerBudgets(self.settings.peer_rate, self.settings.address_rate)
        self._warnings = ThrottledWarnings(log)
        self._over_budget = 0  # requests dropped in the current batch (counted, then noted once)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self.context = zmq.asyncio.Context()
        self.router = make_socket(self.context, zmq.ROUTER, max_message_bytes=self.settings.max_message_bytes)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.router.setsockopt(zmq.SNDHWM, REPLY_HIGH_WATER_MARK)
        self.router.setsockopt(zmq.RCVHWM, REQUEST_HIGH_WATER_MARK)
        # Queued requests are drained and replies sent without waiting (NOBLOCK) through a plain view
        # of the same socket.
        self._router_replies: zmq.Socket[bytes] = zmq.Socket.shadow(self.router.underlying)
        # XPUB in manual mode: a subscription takes effect only once checked (_serve_subscriptions).
        self.publisher = make_socket(self.context, zmq.XPUB, max_message_bytes=MAX_SUBSCRIPTION_BYTES)
        self.publisher.setsockopt(zmq.SNDHWM, FEED_HIGH_WATER_MARK)
        self.publisher.setsockopt(zmq.XPUB_MANUAL, 1)
        self._feed: zmq.Socket[bytes] = zmq.Socket.shadow(self.publisher.underlying)
        for sock in (self.router, self.publisher):
            sock.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_SECONDS * 1000))
        self._curve: CurveServer | None = None
        self._replies: list[tuple[list[bytes], bytes]] = []  # answered, not yet sent (_send_replies)
        # Requests are answered while a commit waits on its store's server, but operators' requests
        # that arrive during one are held (with what answering them needs) until it is done.
        self._committing = False
        self._held: list[tuple[list[bytes], Message, Answering]] = []
        self._guard: ConnectionGuard | None = None

    def configure_curve(self, curve: CurveServer) -> None:
        """Turn on CurveZMQ on both sockets (before :meth:`run` binds them)."""
        curve.apply(self.router)
        curve.apply(self.publisher)
        self._curve = curve

    def stop(self) -> None:
        """Ask :meth:`run` to return soon; open rounds are abandoned, never half-committed."""
        self._stop.set()

    async def run(self, close_grace: float | None = None) -> None:
        """Bind, run the exchange until it is finished or :meth:`stop`, then tear everything down."""
        try:
            self._bind(self.router, self.settings.market)
            self._bind(self.publisher, self.settings.feed)
            self._guard = ConnectionGuard(
                zmq.Context.shadow(self.context.underlying),
                {"market": self._router_replies, "feed": self._feed},
                self.settings.max_connections_per_address,
                self.settings.max_memory_mib,
            )
            self._guard.start()
            log.info("market socket on %s, feed on %s", self.settings.market, self.settings.feed)
            self._publish_queued()
            background = [
                asyncio.create_task(self._serve_requests()),
                asyncio.create_task(self._serve_subscriptions()),
                asyncio.create_task(self._heartbeats()),
            ]
            clock = asyncio.create_task(self._run_clock())
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait({clock, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if clock.done():
                clock.result()
                # Keep answering sync requests and heartbeating so late agents learn the markets closed.
                grace = 3 * self.settings.heartbeat_interval if close_grace is None else close_grace
                await wait_until_set(self._stop, grace)
            for task in [clock, stopper, *background]:
                task.cancel()
            await asyncio.gather(clock, stopper, *background, return_exceptions=True)
        finally:
            await self.exchange.ledger.close_async_commits()
            if self._guard is not None:
                self._guard.stop()
            self.router.close(linger=0)
            self.publisher.close(linger=0)
            if self._curve is not None:
                self._curve.stop()
            self.context.term()

    @staticmethod
    def _bind(sock: zmq.asyncio.Socket, endpoint: str) -> None:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise EndpointError(f"cannot bind {endpoint}: {exc.strerror}") from None

    # --- the clock ------------------------------------------------------------------------

    async def _run_clock(self) -> None:
        """Tick the exchange at its next deadline, or as soon as a round became complete. While a
        commit waits on the store's server, requests are answered, but for the operators' (they change
        what the commit writes), held until it is done."""
        while True:
            self._wake.clear()
            self._committing = True
            try:
                await self.exchange.tick_async()
            finally:
                self._committing = False
            if self._held:
                self._answer_held()
            self._publish_queued()
            if self.exchange.finished:
                return
            delay = self.exchange.next_wake() - self.exchange.clock()
            if delay > 0 and not self.exchange.has_due():
                await wait_until_set(self._wake, delay)
            else:
                await asyncio.sleep(0)  # let queued requests in between ticks

    def _answer_held(self) -> None:
        held, self._held = self._held, []
        for envelope, request, answering in held:
            self._respond(envelope, request, answering)
        self._send_replies()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            for beat in self.exchange.heartbeats():
                self._publish(beat, encode(beat))
            self._take_subscriptions()

    # --- the feed -------------------------------------------------------------------------

    def _publish_queued(self) -> None:
        queued = self.exchange.drain()
        if not queued:
            return
        # Subscriptions already waiting on the socket take effect before these broadcasts go out: a
        # subscriber connected before them receives them even if this loop has not read it yet.
        self._take_subscriptions()
        for message, payload in queued:
            self._publish(message, payload)
            if self.metrics is not None:
                self.metrics.broadcast(message)
            if self.observer is not None:
                self.observer(message)
        self._take_subscriptions()

    def _publish(self, message: Message, payload: bytes) -> None:
        """Send one broadcast under its topic: the exchange's notices under ``x``, a market's broadcasts
        under ``m.<id>`` (PUB never blocks: a slow subscriber loses messages and resyncs)."""
        if isinstance(message, ExchangeNotice):
            self._feed.send(topic_frame(EXCHANGE_TOPIC, payload), LAST)
            return
        market = getattr(message, "market", None)
        assert isinstance(market, str)
        self._feed.send(topic_frame(market_topic(market), payload), LAST)
        if market == self.exchange.default_market:
            self._feed.send(payload, LAST)

    # --- the feed's subscriptions -----------------------------------------------------------

    async def _serve_subscriptions(self) -> None:
        """Apply a subscriber's (un)subscription if it names the exchange's own topics; ignore the rest
        (so what subscribers can make the feed socket hold is bounded by the markets that exist)."""
        while True:
            self._subscription(await self.publisher.recv())
            self._take_subscriptions()
            await asyncio.sleep(0)

    def _take_subscriptions(self) -> None:
        """Apply the (un)subscriptions already queued, without a trip through the loop each. Also run
        after publishing: a send through the shadow socket processes libzmq's commands and can use
        up the edge of ZMQ_FD that the pending asyncio receive waits for, leaving a subscription
        unread until the next one arrives."""
        for _ in range(DRAIN_BATCH):
            try:
                self._subscription(self._feed.recv(zmq.NOBLOCK))
            except zmq.Again:
                return

    def _subscription(self, message: bytes) -> None:
        if len(message) < 1 or message[0] not in (0, 1):
            return
        prefix = message[1:]
        market = subscribed_market(prefix)
        if prefix in BROAD_SUBSCRIPTIONS or (market is not None and self.exchange.knows_market(market)):
            self._feed.setsockopt(zmq.SUBSCRIBE if message[0] == 1 else zmq.UNSUBSCRIBE, prefix)
        else:
            self._warnings.note("feed subscriptions to unknown topics ignored")

    # --- requests -------------------------------------------------------------------------

    async def _serve_requests(self) -> None:
        while True:
            first = await self.router.recv_multipart(copy=False)
            self._answer(first[0].bytes, first[1:])
            # Answer what is already queued without a trip through the event loop per message;
            # bounded, then the loop is yielded: the clock gets its turn after each batch however
            # many requests wait, and rounds that became complete within one batch commit together.
            for _ in range(DRAIN_BATCH):
                try:
                    peer, frames = queued_request(self._router_replies)
                except zmq.Again:
                    break
                self._answer(peer, frames)
            if self._over_budget:
                self._warnings.note(OVER_BUDGET, self._over_budget)
                if self.metrics is not None:
                    self.metrics.dropped += self._over_budget
                self._over_budget = 0
            self._send_replies()
            self._publish_queued()
            if self.exchange.has_due():
                self._wake.set()
            await asyncio.sleep(0)

    def _handle(
        self, peer: bytes, request: Message, identity: str | None, address: str | None, admitted: Admission | None
    ) -> Message | bytes:
        try:
            return self.exchange.handle(peer, request, identity, address, admitted)
        except Exception:
            log.exception("failed to handle a %s request", request.type)
            return Error(code=ErrorCode.INTERNAL, message="the auctioneer failed on this request", re=request.id)

    def _answer(self, peer: bytes, frames: list[zmq.Frame]) -> None:
        """Answer one request: ``peer`` is its routing id, ``frames`` what followed it. A request over
        its budgets is only counted: a flood costs the auctioneer little more than reading it."""
        within_budget, address = self._budgets.admit_request(
            peer, sum(map(len, frames)), functools.partial(_peer_address, frames[-1])
        )
        if not within_budget:
            self._over_budget += 1
            return
        envelope = [peer, b""] if len(frames) == 2 and not len(frames[0]) else [peer]
        reply: Message | bytes
        request_type: str | None = None
        if len(frames) != len(envelope):
            reply = Error(code=ErrorCode.MALFORMED, message=f"expected one message frame, got {len(frames)}")
        else:
            payload = frames[-1]
            identity = str(payload.get("User-Id")) if self.settings.curve_secret else None
            try:
                admit = functools.partial(self.exchange.admit_bid, peer)
                request, admitted = decode_request(payload.bytes, self._limits, AUCTIONEER_REQUESTS, admit)
            except ProtocolError as exc:
                reply = refusal(exc, exc.request_id)
                request_type = exc.request_type
            else:
                request_type = request.type
                if isinstance(request, SyncRequest) and not self._budgets.admit_sync(peer, address):
                    reply = Error(code=ErrorCode.LIMIT_REACHED, message=SYNC_LIMITED, re=request.id)
                else:
                    answering = Answering(peer, identity, address, admitted)
                    if self._committing and request.type in OPERATORS:
                        self._held.append((envelope, request, answering))
                        return
                    self._respond(envelope, request, answering)
                    return
        self._reply(envelope, request_type, reply, peer, address)

    def _respond(self, envelope: list[bytes], request: Message, answering: Answering) -> None:
        reply = self._handle(answering.peer, request, answering.identity, answering.address, answering.admitted)
        self._reply(envelope, request.type, reply, answering.peer, answering.address)

    def _reply(
        self, envelope: list[bytes], request_type: str | None, reply: Message | bytes, peer: bytes, address: str | None
    ) -> None:
        if self.metrics is not None:
            self.metrics.replied(request_type, reply)
        if isinstance(reply, bytes):
            data = reply
            self._budgets.sync_sent(peer, address, len(data))
        else:
            data = encode(reply)
        self._replies.append((envelope, data))

    def _send_replies(self) -> None:
        """Send the replies to a batch of requests, together. Each reply to a peer whose connection went
        idle costs libzmq a wake-up of its I/O thread; sent one by one between requests, nearly every
        reply paid it, while a burst of them is taken in by one (at 100 agents a round's main-thread
        time fell by about a sixth). A reply waits at most for the rest of its batch."""
        send = self._router_replies.send
        for envelope, data in self._replies:
            try:
                for frame in envelope:
                    send(frame, MORE)
                send(data, LAST)
            except zmq.ZMQError:
                # The peer is gone (EHOSTUNREACH) or does not read its replies (EAGAIN): drop, count.
                self._warnings.note("replies dropped (peer gone, or not reading its replies)")
        self._replies.clear()


def queued_request(sock: zmq.Socket[bytes]) -> tuple[bytes, list[zmq.Frame]]:
    """The routing id and the frames of a request already queued on a ROUTER ``sock`` (``zmq.Again``
    if there is none). The routing id is read as bytes (a ROUTER always follows it with a frame),
    about 0.5 µs cheaper than a frame object. ``recv_multipart`` asks the socket for RCVMORE after every
    frame, through an enum conversion that costs more than the frame; each frame here says itself
    whether more follow."""
    peer = sock.recv(zmq.NOBLOCK)
    frames = [sock.recv(zmq.NOBLOCK, copy=False)]
    while frames[-1].more:
        frames.append(sock.recv(zmq.NOBLOCK, copy=False))
    return peer, frames


async def wait_until_set(event: asyncio.Event, timeout: float) -> None:
    """Return once ``event`` is set or ``timeout`` seconds have passed.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives as the awaited
    event is set, and the clock, cancelled by a stop at the moment a bid completed a round, then ran
    on and the server never finished stopping. ``asyncio.timeout`` tells its own cancellation from
    the caller's."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


def _peer_address(frame: zmq.Frame) -> str | None:
    """The sending peer's IP address, as libzmq reports it for TCP connections."""
    try:
        return str(frame.get("Peer-Address"))
    except zmq.ZMQError:
        return None

"""The auctioneer's network side: a ROUTER for requests, a PUB for the feed, and the round clock.

One long-lived receive task per socket; the round loop opens rounds, waits for the deadline or for
every live agent's bid, and broadcasts what :class:`Market` decided (after it is committed). A
heartbeat task publishes the latest seq so subscribers can detect gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import zmq
import zmq.asyncio

from auctioneer.market import Market
from auctioneer.security import CurveServer
from protocol import ErrorCode, ProtocolError, decode, encode
from protocol.codec import Limits
from protocol.messages import AGENT_REQUESTS, Error, Heartbeat, MarketClosed, Message, RoundOpen, RoundResult
from protocol.sockets import FEED_HIGH_WATER_MARK, make_socket

log = logging.getLogger(__name__)

Broadcast = RoundOpen | RoundResult | MarketClosed
DRAIN_BATCH = 256
Observer = Callable[[Broadcast], None]


class EndpointError(Exception):
    """An endpoint the auctioneer must bind cannot be bound (in use, or not an address of this host)."""


class AuctioneerServer:
    """Serves one :class:`Market` on a market (ROUTER) and a feed (PUB) endpoint."""

    def __init__(self, market: Market, observer: Observer | None = None) -> None:
        self.market = market
        self.settings = market.settings
        self.observer = observer
        self._limits = Limits(self.settings.max_message_bytes, self.settings.max_support)
        self._everyone_bid = asyncio.Event()
        self._stop = asyncio.Event()
        self.context = zmq.asyncio.Context()
        self.router = make_socket(self.context, zmq.ROUTER, max_message_bytes=self.settings.max_message_bytes)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # Queued requests are drained and replies sent without waiting (NOBLOCK) through a plain view
        # of the same socket.
        self._router_replies: zmq.Socket[bytes] = zmq.Socket.shadow(self.router.underlying)
        self.publisher = make_socket(self.context, zmq.PUB)
        self.publisher.setsockopt(zmq.SNDHWM, FEED_HIGH_WATER_MARK)
        self._curve: CurveServer | None = None

    def configure_curve(self, curve: CurveServer) -> None:
        """Turn on CurveZMQ on both sockets (before :meth:`run` binds them)."""
        curve.apply(self.router)
        curve.apply(self.publisher)
        self._curve = curve

    def stop(self) -> None:
        """Ask :meth:`run` to return soon; the open round is abandoned, never half-committed."""
        self._stop.set()

    async def run(self, close_grace: float | None = None) -> MarketClosed | None:
        """Bind, run rounds until the market closes or :meth:`stop`, then tear everything down."""
        try:
            self._bind(self.router, self.settings.market)
            self._bind(self.publisher, self.settings.feed)
            log.info("market on %s, feed on %s", self.settings.market, self.settings.feed)
            background = [asyncio.create_task(self._serve_requests()), asyncio.create_task(self._heartbeats())]
            rounds = asyncio.create_task(self._run_rounds())
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait({rounds, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if rounds.done():
                rounds.result()
                # Keep answering sync requests and heartbeating so late agents learn the market closed.
                grace = 3 * self.settings.heartbeat_interval if close_grace is None else close_grace
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), grace)
            for task in [rounds, stopper, *background]:
                task.cancel()
            await asyncio.gather(rounds, stopper, *background, return_exceptions=True)
            return self.market.closed
        finally:
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

    # --- rounds ---------------------------------------------------------------------------

    async def _run_rounds(self) -> None:
        if self.market.closed is not None:
            return
        await self._wait_for_agents()
        while self.market.closed is None:
            if self.market.last_round and self.settings.round_pause:
                await asyncio.sleep(self.settings.round_pause)
            self._everyone_bid.clear()
            announcement = self.market.open_round()
            await self._publish(announcement)
            remaining = announcement.deadline - time.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._everyone_bid.wait(), max(remaining, 0.0))
            for broadcast in self.market.close_round():
                await self._publish(broadcast)

    async def _wait_for_agents(self) -> None:
        needed = self.settings.min_agents
        if needed:
            log.info("waiting for %d agent(s) to register", needed)
        while len(self.market.live_agents()) < needed:
            await asyncio.sleep(0.05)

    async def _publish(self, message: Broadcast) -> None:
        await self.publisher.send(encode(message))
        if self.observer is not None:
            self.observer(message)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            current = self.market.current
            beat = Heartbeat(
                seq=self.market.seq, round=current.number if current else self.market.last_round, time=time.time()
            )
            await self.publisher.send(encode(beat))

    # --- requests -------------------------------------------------------------------------

    async def _serve_requests(self) -> None:
        while True:
            self._answer(await self.router.recv_multipart(copy=False))
            # Answer what is already queued without a trip through the event loop per message;
            # bounded, so the round clock and heartbeats still get their turn.
            for _ in range(DRAIN_BATCH):
                try:
                    frames = self._router_replies.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._answer(frames)

    def _handle(self, peer: bytes, request: Message, identity: str | None) -> Message:
        try:
            reply = self.market.handle(peer, request, identity)
        except Exception:
            log.exception("failed to handle a %s request", request.type)
            return Error(code=ErrorCode.INTERNAL, message="the auctioneer failed on this request", re=request.id)
        if self.market.everyone_has_bid():
            self._everyone_bid.set()
        return reply

    def _answer(self, frames: list[zmq.Frame]) -> None:
        peer = frames[0].bytes
        envelope = [peer, b""] if len(frames) == 3 and not frames[1].bytes else [peer]
        reply: Message
        if len(frames) != len(envelope) + 1:
            reply = Error(code=ErrorCode.MALFORMED, message=f"expected one message frame, got {len(frames) - 1}")
        else:
            payload = frames[-1]
            identity = str(payload.get("User-Id")) if self.market.settings.curve_secret else None
            try:
                request = decode(payload.bytes, self._limits, AGENT_REQUESTS)
            except ProtocolError as exc:
                reply = Error(code=exc.code, message=exc.message, field=exc.field)
            else:
                reply = self._handle(peer, request, identity)
        try:
            self._router_replies.send_multipart([*envelope, encode(reply)], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("could not reply to a peer (%s)", exc)

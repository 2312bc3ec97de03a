"""Socket hygiene shared by every ZeroMQ peer of the protocol: options, addresses, teardown.

Both the auctioneer and the clients create their sockets through :func:`make_socket`, so limits
(``MAXMSGSIZE``), ``LINGER 0`` and high-water marks are set in one place. The default endpoints and
the check of an endpoint a client is given (:func:`endpoint_problem`) live here too.
"""

from __future__ import annotations

import ipaddress
import logging
import socket as stdlib_socket
from urllib.parse import urlparse

import zmq
import zmq.asyncio

log = logging.getLogger(__name__)

HIGH_WATER_MARK = 100_000
# The feed keeps at most this many broadcasts queued per subscriber: a slow subscriber loses the
# rest and resyncs (SPEC 3.3), instead of growing the auctioneer's memory. An exchange announces a
# round in every market at once (a burst of one broadcast per market), so it is far above that.
FEED_HIGH_WATER_MARK = 20_000

DEFAULT_MARKET_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_FEED_ENDPOINT = "tcp://127.0.0.1:5556"
TRANSPORTS = ("tcp", "ipc", "inproc")


def make_socket(context: zmq.asyncio.Context, kind: int, *, max_message_bytes: int | None = None) -> zmq.asyncio.Socket:
    """A socket with ``LINGER 0`` (never hang at exit), generous HWMs and an optional inbound size cap."""
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
    sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
    if max_message_bytes is not None:
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
    return sock


class QueuedFirst:
    """Receives from an asyncio socket, reading a message already queued without the asyncio socket's
    machinery (a future, an events check through pyzmq's enums, a timer) when there is one.

    That machinery costs more than the message's own read, and messages come in bursts (an
    exchange announces a round in every market at once). The queued message is read through a plain
    view of the same socket; only when none is queued is the receive awaited, and the asyncio
    socket checks the socket's events before it waits, so a message that arrives in between is not
    missed. For a socket that only this reader receives from, and whose sends never wait (a high
    water mark far above what is queued): a plain read could take the edge of the socket's
    descriptor that a waiting send would wake on."""

    def __init__(self, sock: zmq.asyncio.Socket) -> None:
        self.socket = sock
        self._plain: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)

    async def recv(self) -> bytes:
        try:
            return self._plain.recv(zmq.NOBLOCK)
        except zmq.Again:
            return await self.socket.recv()


def endpoint_problem(endpoint: str) -> str | None:
    """Why a client cannot connect to ``endpoint``, in one sentence; None if it can. ZeroMQ
    accepts some malformed endpoints and never connects (``tcp://host:99999``) and refuses others
    with a bare "Invalid argument", so clients check what they are given first."""
    transport, separator, address = endpoint.partition("://")
    expected = "expected tcp://HOST:PORT, ipc://PATH or inproc://NAME"
    if not separator or transport not in TRANSPORTS:
        return f"{endpoint!r} is not a ZeroMQ endpoint: {expected}"
    if not address:
        return f"{endpoint!r} names no address: {expected}"
    if transport == "tcp":
        host, colon, port = address.rpartition(":")
        if not host or host == "*":
            return f"{endpoint!r} names no {'host to connect to' if colon else 'port'}: expected tcp://HOST:PORT"
        if not (port.isdigit() and 0 < int(port) < 65536):
            return f"{endpoint!r} names no port from 1 to 65535: expected tcp://HOST:PORT"
    return None


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ``tcp://127.x.x.x:port``, ``tcp://[::1]:port``, ``tcp://localhost:port`` and ``ipc://``/``inproc://``."""
    parsed = urlparse(endpoint)
    if parsed.scheme in ("ipc", "inproc"):
        return True
    host = parsed.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_tcp_endpoint(host: str = "127.0.0.1") -> str:
    """A ``tcp://host:port`` with a port free right now (for tests and the demo)."""
    with stdlib_socket.socket() as probe:
        probe.bind((host, 0))
        return f"tcp://{host}:{probe.getsockname()[1]}"

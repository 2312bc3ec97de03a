"""Attacks on a running auctioneer, each run as its own process by ``tests/test_attacks.py``:
``python -m tests.attacks ATTACK --market EP --feed EP [--count N] [--seconds S]``.

Every attack is one peer (one process, at low priority: on its own machine it would not take the
honest agents' CPU) doing what the issue's attacker did; it prints one JSON line of what it saw.
Its ZeroMQ connections come from :data:`ATTACKER_HOST`, another loopback address: to the auctioneer
it is another host than the honest agents.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import msgpack
import numpy as np
import zmq

from protocol import Distribution, decode, encode
from protocol.messages import Hello, Ping, RoundOpen, SealedBid, SyncReply, SyncRequest
from protocol.topics import TOPIC_MARK, market_topic, split_frame, subscription
from tests.helpers import scrape

WIDE_SUPPORT = 4096

Attack = Callable[[zmq.Context[zmq.Socket[bytes]], argparse.Namespace], dict[str, Any]]


ATTACKER_HOST = "127.0.0.2"


def from_attacker_host(endpoint: str) -> str:
    """``endpoint`` connected to from :data:`ATTACKER_HOST` (ZeroMQ's ``source;destination`` form)."""
    return endpoint.replace("tcp://", f"tcp://{ATTACKER_HOST}:0;", 1)


def dealer(context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)  # queue everything: the attacker never waits
    sock.connect(from_attacker_host(endpoint))
    return sock


def ask(sock: zmq.Socket[bytes], message: Any, timeout: float = 10.0) -> Any:
    sock.send(encode(message))
    if not sock.poll(int(timeout * 1000)):
        raise TimeoutError(f"no reply to {message.type}")
    return decode(sock.recv())


def open_round(sock: zmq.Socket[bytes]) -> RoundOpen:
    while True:
        reply = ask(sock, SyncRequest(limit=1))
        if isinstance(reply, SyncReply) and reply.open_round is not None:
            return reply.open_round
        time.sleep(0.02)


def flood(sock: zmq.Socket[bytes], payload: bytes, count: int) -> None:
    for _ in range(count):
        sock.send(payload)


def pings(context: zmq.Context[zmq.Socket[bytes]], args: argparse.Namespace) -> dict[str, Any]:
    """An unregistered peer sends ``count`` pings as fast as it can and disconnects without reading."""
    sock = dealer(context, args.market)
    flood(sock, encode(Ping()), args.count)
    time.sleep(1.0)  # let them leave before the connection goes
    sock.close()
    return {"sent": args.count}


def duplicate_bids(context: zmq.Context[zmq.Socket[bytes]], args: argparse.Namespace) -> dict[str, Any]:
    """A registered peer bids once, then sends the same bid ``count`` times and never reads the replies."""
    sock = dealer(context, args.market)
    ask(sock, Hello(name="duplicator"))
    current = open_round(sock)
    bid = encode(SealedBid(round=current.round, bid=0.5, distribution=Distribution.from_mapping({"d": 1.0})))
    first = ask(sock, decode(bid))
    flood(sock, bid, args.count)
    time.sleep(args.seconds)
    sock.close()
    return {"first": first.type, "sent": args.count}


def unread_syncs(context: zmq.Context[zmq.Socket[bytes]], args: argparse.Namespace) -> dict[str, Any]:
    """``count`` requests for the whole history, whose replies are never read, the connection kept open."""
    sock = dealer(context, args.market)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.setsockopt(zmq.RCVBUF, 4096)
    flood(sock, encode(SyncRequest(since_seq=0, limit=1000)), args.count)
    time.sleep(args.seconds)
    sock.close()
    return {"sent": args.count}


def zero_bids(context: zmq.Context[zmq.Socket[bytes]], args: argparse.Namespace) -> dict[str, Any]:
    """``count`` identities bid 0 in every round with 4096-token distributions of their own tokens."""
    sockets = [dealer(context, args.market) for _ in range(args.count)]
    for k, sock in enumerate(sockets):
        ask(sock, Hello(name=f"zero{k}"))
    uniform = np.full(WIDE_SUPPORT, 1 / WIDE_SUPPORT).astype("<f8").tobytes()
    bids = {k: {"tokens": [f"z{k}.{t}" for t in range(WIDE_SUPPORT)], "probs": uniform} for k in range(args.count)}
    feed = context.socket(zmq.SUB)
    feed.setsockopt(zmq.SUBSCRIBE, b"")
    feed.connect(from_attacker_host(args.feed))
    accepted = refused = 0
    deadline, give_up = time.monotonic() + args.seconds, time.monotonic() + 3 * args.seconds
    while time.monotonic() < (deadline if accepted + refused else give_up):  # at least one round attacked
        if not feed.poll(100):
            continue
        topic, payload = split_frame(feed.recv())
        if topic is None:
            continue
        message = decode(payload)
        if not isinstance(message, RoundOpen):
            continue
        for k, sock in enumerate(sockets):
            bid = {"v": 1, "type": "sealed_bid", "round": message.round, "bid": 0, "distribution": bids[k]}
            sock.send(msgpack.packb(bid))
        for sock in sockets:
            if sock.poll(200):  # (bids over the address budget get no reply)
                reply = decode(sock.recv())
                accepted += reply.type == "bid_accepted"
                refused += reply.type == "error"
    return {"accepted": accepted, "refused": refused}


def sybils(context: zmq.Context[zmq.Socket[bytes]], args: argparse.Namespace) -> dict[str, Any]:
    """``count`` identities register and stay live (they ping) without ever bidding; with
    ``--metrics``, the most live agents the auctioneer counted meanwhile."""
    sockets = [dealer(context, args.market) for _ in range(args.count)]
    for k, sock in enumerate(sockets):
        sock.send(encode(Hello(name=f"sybil{k}")))
    welcomed = sum(sock.poll(10_000) and decode(sock.recv()).type == "welcome" for sock in sockets)
    ping = encode(Ping())
    deadline = time.monotonic() + args.seconds
    peak_live = 0.0
    while time.monotonic() < deadline:
        for sock in sockets:
            sock.send(ping)
            while sock.poll(0):
                sock.recv()
        time.sleep(0.5)  # the heartbeat of the tests' markets
        if args.metrics:
            peak_live = max(peak_live, scrape(args.metrics)["token_auction_live_agents"])
    return {"count": args.count, "welcomed": welcomed, "peak_live": peak_live}


def names_on_one_connection(context: zmq.Context[zmq.Socket[bytes]], args: argparse.Namespace) -> dict[str, Any]:
    """One connection registers ``count`` different names."""
    sock = dealer(context, args.market)
    replies: dict[str, int] = {}
    for k in range(args.count):
        sock.send(encode(Hello(name=f"many{k}")))
    for _ in range(args.count):
        if not sock.poll(10_000):
            break
        reply = decode(sock.recv())
        key = getattr(reply, "code", reply.type)
        replies[key] = replies.get(key, 0) + 1
    return replies


def feed_input(context: zmq.Context[zmq.Socket[bytes]], args: argparse.Namespace) -> dict[str, Any]:
    """Feed input: huge subscription messages, ``count`` subscriptions to topics that do not exist, and
    a 64 MiB frame, each from its own connection."""
    sent = {}
    huge = context.socket(zmq.XSUB)
    # The auctioneer drops these connections at their first oversized frame. Reconnecting, an XSUB
    # resends every subscription it holds, walking libzmq's trie recursively: with 1 MiB and 64 MiB
    # keys that overflowed this attacker's own stack now and then (SIGSEGV, seen once in the suite).
    huge.setsockopt(zmq.RECONNECT_IVL, -1)
    huge.connect(from_attacker_host(args.feed))
    for _ in range(8):
        huge.send(b"\x01" + b"h" * (1 << 20))
    sent["huge subscriptions"] = 8
    many = context.socket(zmq.XSUB)
    many.setsockopt(zmq.SNDHWM, 0)
    many.connect(from_attacker_host(args.feed))
    for k in range(args.count):
        many.send(b"\x01" + subscription(market_topic(f"nowhere{k}")))
    sent["unknown topics"] = args.count
    frame = context.socket(zmq.XSUB)
    frame.setsockopt(zmq.RECONNECT_IVL, -1)
    frame.connect(from_attacker_host(args.feed))
    frame.send(b"\x01" + TOPIC_MARK + b"x" * (64 << 20))
    sent["64 MiB frame"] = 1
    received = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        if many.poll(100):
            many.recv()
            received += 1
    return {"sent": sent, "received on unknown topics": received}


def idle_connections(context: zmq.Context[zmq.Socket[bytes]], args: argparse.Namespace) -> dict[str, Any]:
    """``count`` TCP connections to the market socket that never start the ZeroMQ handshake, reopened
    as the auctioneer closes them, for ``seconds``."""
    address = urlparse(args.market)
    target = (address.hostname or "127.0.0.1", address.port or 0)
    held: list[socket.socket] = []
    opened = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        held = [s for s in held if _still_open(s)]
        while len(held) < args.count:
            try:
                held.append(socket.create_connection(target, timeout=1, source_address=(ATTACKER_HOST, 0)))
                opened += 1
            except OSError:
                break
        time.sleep(0.2)
    for s in held:
        s.close()
    return {"opened": opened}


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


# --- ZMTP 3.0 spoken by hand (RFC 23/ZMTP): a peer libzmq cannot tell from a DEALER ------------------

ZMTP_GREETING = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + bytes(31)
ZMTP_MORE, ZMTP_LONG, ZMTP_COMMAND = 0x01, 0x02, 0x04


def zmtp_frame(flags: int, body: bytes) -> bytes:
    if len(body) > 255:
        return bytes([flags | ZMTP_LONG]) + len(body).to_bytes(8, "big") + body
    return bytes([flags, len(body)]) + body


def zmtp_connect(endpoint: str, timeout: float = 5.0) -> socket.socket:
    """A TCP connection from the attacker's host that has done the ZMTP NULL handshake as a DEALER."""
    address = urlparse(endpoint)
    sock = socket.create_connection(
        (address.hostname or "127.0.0.1", address.port or 0), timeout=timeout, source_address=(ATTACKER_HOST, 0)
    )
    ready = b"\x05READY" + b"\x0bSocket-Type" + (6).to_bytes(4, "big") + b"DEALER"
    sock.sendall(ZMTP_GREETING + zmtp_frame(ZMTP_COMMAND, ready))
    received = b""
    while len(received) < len(ZMTP_GREETING) + 2:  # the server's greeting and the start of its READY
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the auctioneer closed the connection during the handshake")
        received += chunk
    return sock


def idle_zmtp(context: zmq.Context[zmq.Socket[bytes]], args: argparse.Namespace) -> dict[str, Any]:
    """``count`` connections that complete the ZMTP handshake and then send nothing, held for
    ``seconds``: how many the auctioneer let stay open."""
    held: list[socket.socket] = []
    refused = 0
    for _ in range(args.count):
        try:
            held.append(zmtp_connect(args.market))
        except OSError:
            refused += 1
    time.sleep(args.seconds)
    still_open = sum(_still_open(sock) for sock in held)
    for sock in held:
        sock.close()
    return {"count": args.count, "handshaken": len(held), "refused": refused, "open": still_open}


def endless_multipart(context: zmq.Context[zmq.Socket[bytes]], args: argparse.Namespace) -> dict[str, Any]:
    """One message whose parts (1 MiB each, under the size limit) all carry the MORE flag, sent as fast
    as possible for ``seconds``, up to ``count`` MiB; reconnecting whenever the auctioneer drops it."""
    part = zmtp_frame(ZMTP_MORE, bytes(1 << 20))
    sent = connections = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline and sent < args.count:
        try:
            sock = zmtp_connect(args.market)
        except OSError:
            time.sleep(0.05)
            continue
        connections += 1
        try:
            while time.monotonic() < deadline and sent < args.count:
                sock.sendall(part)
                sent += 1
        except OSError:
            pass  # dropped: connect again
        finally:
            sock.close()
    return {"sent_mib": sent, "connections": connections}


def sync_flood(context: zmq.Context[zmq.Socket[bytes]], args: argparse.Namespace) -> dict[str, Any]:
    """``count`` connections from one address asking for a market's whole history (``limit`` 1000)
    as fast as they are answered, for ``seconds``."""
    sockets = [dealer(context, args.market) for _ in range(args.count)]
    request = encode(SyncRequest(since_seq=0, limit=1000))
    sent = answered = limited = 0
    for sock in sockets:
        sock.send(request)
        sent += 1
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        for sock in sockets:
            while sock.poll(0):
                reply = msgpack.unpackb(sock.recv())
                answered += reply.get("type") == "sync_reply"
                limited += reply.get("code") == "LIMIT_REACHED"
                sock.send(request)
                sent += 1
        time.sleep(0.001)
    return {"sent": sent, "answered": answered, "limited": limited}


ATTACKS: dict[str, Attack] = {
    attack.__name__: attack
    for attack in (
        pings,
        duplicate_bids,
        unread_syncs,
        zero_bids,
        sybils,
        names_on_one_connection,
        feed_input,
        idle_connections,
        idle_zmtp,
        endless_multipart,
        sync_flood,
    )
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("attack", choices=sorted(ATTACKS))
    parser.add_argument("--market", required=True)
    parser.add_argument("--feed", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--metrics", help="HOST:PORT of the auctioneer's /metrics, for attacks that read it")
    args = parser.parse_args()
    os.nice(10)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    context.setsockopt(zmq.LINGER, 0)
    context.set(zmq.MAX_SOCKETS, 65536)
    print(json.dumps(ATTACKS[args.attack](context, args)), flush=True)
    # No teardown: libzmq frees a socket's subscriptions recursively, and the 1 MiB ones of
    # feed_input would overflow this process's stack (the auctioneer never keeps them).
    os._exit(0)


if __name__ == "__main__":
    main()

"""What peers' connections may hold of the auctioneer, beyond what libzmq bounds by itself.

Two limits, kept by a thread of their own (so a busy event loop never delays them), from libzmq's
socket monitor on the market and feed sockets, which reports the descriptor of every connection
accepted and closed:

- **connections per address**: each accepted connection's peer address is read from its
  descriptor; one address may hold at most ``max_connections_per_address`` connections to each
  socket, and a connection beyond that is shut down as soon as it is accepted (libzmq then closes
  it as it would any connection its peer dropped). Idle handshaken connections from one host can
  no longer take every descriptor and the memory their buffers hold.
- **memory**: libzmq keeps every part of a multipart message until its last part arrives, and its
  ``MAXMSGSIZE`` bounds each part, not their number: one peer sending parts that all carry the
  MORE flag makes the auctioneer hold whatever it sends, before the application ever sees a byte
  of it (so nothing the server reads can refuse it). The guard reads the process's resident memory
  every :data:`MEMORY_CHECK_SECONDS`; above half of ``max_memory_mib`` it also reads how many bytes
  each connection has received (the kernel's count), and above the bound it shuts down the
  connection that received the most since the previous check, which frees what libzmq held for it,
  and so on until the memory is back under the bound.

Shutting a descriptor down (``shutdown(2)``, on a duplicate of it) does not close it: libzmq sees its
peer gone and closes the connection itself, so its own bookkeeping stays right.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass

import zmq

log = logging.getLogger(__name__)

MEMORY_CHECK_SECONDS = 0.01
SUSPECT_BYTES = 1 << 20  # a connection receiving less than this between checks is never dropped for memory
MMAP_THRESHOLD = 128 * 1024
TCP_INFO_BYTES_RECEIVED = 128  # offset of tcpi_bytes_received (u64) in Linux's struct tcp_info
TCP_INFO_SIZE = 256
EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Watched:
    """A socket the guard watches: its name (for logs), its monitor, and its connections."""

    name: str
    monitor: zmq.Socket[bytes]
    addresses: dict[int, str]  # descriptor -> peer address
    per_address: Counter[str]


class ConnectionGuard(threading.Thread):
    """Keeps the connection and memory limits on ``sockets`` (name -> socket) until :meth:`stop`."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        sockets: dict[str, zmq.Socket[bytes]],
        max_per_address: int,
        max_memory_mib: float,
    ) -> None:
        """``context``: the sockets' own (the monitors are inproc sockets of it)."""
        super().__init__(name="connection-guard", daemon=True)
        self.max_per_address = max_per_address
        self.max_memory = int(max_memory_mib * 2**20)
        self.watched = [Watched(name, monitor(context, sock, name), {}, Counter()) for name, sock in sockets.items()]
        self.refused = 0  # connections shut down at their acceptance, over their address's limit
        self.shed = 0  # connections shut down to bring the memory back under its bound
        self.failures = 0
        self._statm = os.open("/proc/self/statm", os.O_RDONLY)  # held open: readable when descriptors run out
        self._received: dict[int, int] = {}  # descriptor -> bytes received, at the last check (above half the bound)
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Stop watching (the monitors are closed by the thread, before the sockets are)."""
        self._stopping.set()
        self.join(timeout=5)

    def run(self) -> None:
        return_large_blocks_to_the_system()
        poller = zmq.Poller()
        for watched in self.watched:
            poller.register(watched.monitor, zmq.POLLIN)
        next_check = time.monotonic()
        try:
            while not self._stopping.is_set():
                try:
                    for watched in self.watched:
                        while watched.monitor.poll(0):
                            self._event(watched, watched.monitor.recv_multipart())
                    if time.monotonic() >= next_check:
                        self._keep_memory_bound()
                        next_check = time.monotonic() + MEMORY_CHECK_SECONDS
                except OSError as exc:  # out of descriptors, say: keep watching
                    self.failures += 1
                    if self.failures == 1 or self.failures % 1000 == 0:
                        log.warning("connection guard: %s (%d times so far); watching on", exc, self.failures)
                poller.poll(int(MEMORY_CHECK_SECONDS * 1000))
        finally:
            for watched in self.watched:
                watched.monitor.close(linger=0)
            os.close(self._statm)

    # --- connections per address ----------------------------------------------------------

    def _event(self, watched: Watched, frames: list[bytes]) -> None:
        if len(frames) != 2 or len(frames[0]) != 6:
            return
        event, descriptor = struct.unpack("=HI", frames[0])
        if event == zmq.EVENT_ACCEPTED:
            self._accepted(watched, descriptor)
        elif descriptor in watched.addresses:  # disconnected, or closed
            address = watched.addresses.pop(descriptor)
            watched.per_address[address] -= 1
            if watched.per_address[address] <= 0:
                del watched.per_address[address]

    def _accepted(self, watched: Watched, descriptor: int) -> None:
        address = peer_address(descriptor)
        if address is None:
            return
        if watched.per_address[address] >= self.max_per_address:
            shut_down(descriptor)
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning(
                    "%s already holds %d connections to the %s socket (the maximum): refusing more (%d so far)",
                    address, self.max_per_address, watched.name, self.refused,
                )  # fmt: skip
            return
        watched.addresses[descriptor] = address
        watched.per_address[address] += 1

    # --- memory ---------------------------------------------------------------------------

    def _keep_memory_bound(self) -> None:
        """Above half the bound, count what each connection receives between checks; above the bound,
        drop the one that received the most since the last check."""
        memory = resident_bytes(self._statm)
        if memory <= self.max_memory // 2:
            self._received.clear()
            return
        received = {fd: received_bytes(fd) for watched in self.watched for fd in watched.addresses}
        previous, self._received = self._received, received
        if memory <= self.max_memory or not previous:
            return
        growth = {fd: count - previous[fd] for fd, count in received.items() if fd in previous}
        busiest = max(growth, key=growth.__getitem__, default=None)
        if busiest is None or growth[busiest] < SUSPECT_BYTES:
            return  # nobody is sending much: the memory is the exchange's own
        address = next(w.addresses[busiest] for w in self.watched if busiest in w.addresses)
        shut_down(busiest)
        self._received.pop(busiest, None)
        self.shed += 1
        log.warning(
            "memory %.0f MiB over its bound of %.0f MiB: dropped the connection from %s receiving the most "
            "(%.1f MiB since the last check)",
            memory / 2**20, self.max_memory / 2**20, address, growth[busiest] / 2**20,
        )  # fmt: skip


def return_large_blocks_to_the_system() -> None:
    """Have glibc serve every block over :data:`MMAP_THRESHOLD` from its own mapping, returned to the
    system when freed. By default glibc raises that threshold each time such a block is freed, so
    the parts of a dropped connection's message would stay in the heap, the process's resident
    memory would not fall, and the guard could not tell its bound was kept. (No-op off glibc.)"""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        log.debug("mallopt is not available: large blocks stay with the allocator's defaults")


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def monitor(context: zmq.Context[zmq.Socket[bytes]], sock: zmq.Socket[bytes], name: str) -> zmq.Socket[bytes]:
    """A PAIR socket receiving ``sock``'s connection events."""
    address = f"inproc://connection-guard.{name}.{id(sock)}"
    sock.monitor(address, EVENTS)
    events = context.socket(zmq.PAIR)
    # No high-water mark: a monitor whose reader falls behind blocks the socket it monitors (and
    # with it every connection), so events must queue rather than wait, however many arrive.
    events.setsockopt(zmq.RCVHWM, 0)
    events.connect(address)
    return events


def peer_address(descriptor: int) -> str | None:
    """The IP address of a TCP connection's peer (None for anything else, or a descriptor gone)."""
    try:
        with socket.socket(fileno=os.dup(descriptor)) as sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                return None
            return str(sock.getpeername()[0])
    except OSError:
        return None


def shut_down(descriptor: int) -> None:
    """Shut a connection down in both directions; libzmq, its owner, then closes it."""
    try:
        with socket.socket(fileno=os.dup(descriptor)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


def received_bytes(descriptor: int) -> int:
    """How many bytes a TCP connection has received (the kernel's count), 0 if it is gone."""
    try:
        with socket.socket(fileno=os.dup(descriptor)) as sock:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
    except OSError:
        return 0
    return int(struct.unpack_from("<Q", info, TCP_INFO_BYTES_RECEIVED)[0]) if len(info) >= 136 else 0


def resident_bytes(statm: int) -> int:
    """This process's resident memory (``statm``: a descriptor of ``/proc/self/statm``)."""
    return int(os.pread(statm, 128, 0).split()[1]) * PAGE_BYTES

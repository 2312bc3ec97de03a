"""Fair service between the auctioneer's peers: budgets per connection and per network address, and
warnings about failing peers that cannot flood the log.

Token buckets, refilled continuously up to a burst:

- **requests**: one unit per request plus one per KiB it carries, at ``peer_rate`` units a second
  per connection (keyed by its routing id) and ``address_rate`` per network address (all its
  connections together: many connections do not multiply what one host may make the auctioneer
  decode). A request that arrives while either bucket is empty is dropped before it is decoded and
  gets no reply (the client's timeout and retry apply);
- **sync replies**: the KiB of ``sync_reply`` a connection is sent, at :data:`SYNC_KIB_RATE` a second
  after a burst of :data:`SYNC_KIB_BURST`, and all connections of one address together at twice
  that (a new connection brings no fresh allowance to its host). A ``sync_request`` while either is
  exhausted is answered ``LIMIT_REACHED`` at once. This bounds what a peer that never reads its
  replies makes the auctioneer hold, and the ledger reads and reply building it makes it do,
  however many connections it opens.

Buckets that have refilled are forgotten, so connections that went quiet take no memory.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

KIB = 1024
SYNC_KIB_RATE = 4 * 1024  # 4 MiB of sync replies a second per connection
SYNC_KIB_BURST = 16 * 1024
ADDRESS_SYNC_SHARE = 2  # an address's sync allowance, in connections' worth
REQUEST_BURST_SECONDS = 2.0
PRUNE_AT = 10_000  # buckets kept before the refilled ones are swept away


class TokenBuckets:
    """A token bucket per peer: ``rate`` units a second, at most ``burst`` saved."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[bytes, list[float]] = {}  # peer -> [units left, when last refilled]
        self._prune_at = PRUNE_AT

    def refilled(self, peer: bytes, now: float) -> list[float]:
        """The peer's bucket, ``[units left, when last refilled]``, refilled up to ``now``."""
        bucket = self._buckets.get(peer)
        if bucket is None:
            if len(self._buckets) >= self._prune_at:
                self._prune(now)
            bucket = self._buckets[peer] = [self.burst, now]
        else:
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        return bucket

    def take(self, peer: bytes, cost: float) -> bool:
        """Spend ``cost`` if the peer has at least one unit left (it may then go below zero, and waits)."""
        bucket = self.refilled(peer, self.clock())
        if bucket[0] < 1.0:
            return False
        bucket[0] -= cost
        return True

    def spend(self, peer: bytes, cost: float) -> None:
        """Spend ``cost`` after the fact (what a reply turned out to cost)."""
        self.refilled(peer, self.clock())[0] -= cost

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled (a full bucket is what a new peer gets anyway)."""
        self._buckets = {
            peer: bucket
            for peer, bucket in self._buckets.items()
            if bucket[0] + (now - bucket[1]) * self.rate < self.burst
        }
        self._prune_at = max(PRUNE_AT, 2 * len(self._buckets))

    def __len__(self) -> int:
        return len(self._buckets)


class Admission(NamedTuple):
    """Whether a request was within its budgets, and the network address it came from."""

    admitted: bool
    address: str | None


OVER_CONNECTION_BUDGET = Admission(False, None)  # a flood's usual answer, built once


class PeerBudgets:
    """The budgets of every connection and every network address."""

    def __init__(self, request_rate: float, address_rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.requests = TokenBuckets(request_rate, request_rate * REQUEST_BURST_SECONDS, clock)
        self.addresses = TokenBuckets(address_rate, address_rate * REQUEST_BURST_SECONDS, clock)
        self.sync = TokenBuckets(SYNC_KIB_RATE, SYNC_KIB_BURST, clock)
        self.address_sync = TokenBuckets(ADDRESS_SYNC_SHARE * SYNC_KIB_RATE, ADDRESS_SYNC_SHARE * SYNC_KIB_BURST, clock)

    def admit_request(self, peer: bytes, size: int, address_of: Callable[[], str | None]) -> Admission:
        """Charge a request of ``size`` bytes to its connection and to its address (``address_of``:
        looked up only for a connection that has budget left, so a flood is dropped before anything
        else is looked at; None: not TCP)."""
        now = self.requests.clock()
        connection = self.requests.refilled(peer, now)
        if connection[0] < 1.0:
            return OVER_CONNECTION_BUDGET
        address = address_of()
        cost = 1.0 + size / KIB
        if address is not None:
            host = self.addresses.refilled(address.encode(), now)
            if host[0] < 1.0:
                return Admission(False, address)
            host[0] -= cost
        connection[0] -= cost
        return Admission(True, address)

    def admit_sync(self, peer: bytes, address: str | None) -> bool:
        """Whether a ``sync_request`` may be answered: its connection and its address have sync
        allowance left (what its reply costs is charged once it is built, :meth:`sync_sent`)."""
        host = address.encode() if address is not None else None
        return self.sync.take(peer, 0.0) and (host is None or self.address_sync.take(host, 0.0))

    def sync_sent(self, peer: bytes, address: str | None, size: int) -> None:
        self.sync.spend(peer, size / KIB)
        if address is not None:
            self.address_sync.spend(address.encode(), size / KIB)


class ThrottledWarnings:
    """Counts repeated failures by kind and logs them at most once per ``interval`` seconds."""

    def __init__(
        self, logger: logging.Logger, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._counts: Counter[str] = Counter()
        self._since = clock() - interval  # the first failure is logged at once

    def note(self, what: str, count: int = 1) -> None:
        self._counts[what] += count
        now = self.clock()
        if now - self._since >= self.interval:
            for kind, total in self._counts.items():
                self.logger.warning("%s: %d in the last %.0f s", kind, total, min(now - self._since, self.interval))
            self._counts.clear()
            self._since = now

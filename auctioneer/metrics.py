"""The auctioneer's Prometheus metrics (``/metrics`` on ``serve --http``), in a registry of its own.

Fed by the server (every broadcast, every reply) and the ledger (every commit's duration); live
agents and open markets are read from the exchange when scraped.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from auctioneer.exchange import Exchange
from protocol.messages import BidAccepted, Error, Message, RoundOpen, RoundResult

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AuctioneerMetrics:
    """Rounds, bids, revenue, resyncs, commit and round-close times of one auctioneer process."""

    def __init__(self, exchange: Exchange) -> None:
        self.registry = CollectorRegistry()
        self.rounds = Counter("token_auction_rounds_committed", "Rounds committed", registry=self.registry)
        self.revenue = Counter("token_auction_revenue", "Sum of all payments", registry=self.registry)
        self.bids = Counter(
            "token_auction_bids", "Sealed bids answered, by outcome (accepted or the error code)", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        self._accepted = self.bids.labels("accepted")  # the hot label, looked up once
        self._refused: dict[str, Counter] = {}
        self.resyncs = Counter("token_auction_resyncs_served", "sync_request answered", registry=self.registry)
        self.round_close = Histogram(
            "token_auction_round_close_seconds", "From a round's opening to its result's broadcast",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.commit = Histogram(
            "token_auction_ledger_commit_seconds", "Duration of one ledger commit (one fsync)",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        live = Gauge("token_auction_live_agents", "Agents heard from recently", registry=self.registry)
        live.set_function(lambda: len(exchange.live_agents()))
        markets = Gauge("token_auction_open_markets", "Markets open in the exchange", registry=self.registry)
        markets.set_function(lambda: len(exchange.markets))
        self._opened: dict[tuple[str | None, int], float] = {}  # (market, round) -> when it opened
        exchange.ledger.on_commit = self.commit.observe

    def broadcast(self, message: Message) -> None:
        """Count a message the feed published."""
        if isinstance(message, RoundOpen):
            self._opened[(message.market, message.round)] = time.monotonic()
        elif isinstance(message, RoundResult):
            self.rounds.inc()
            self.revenue.inc(sum(message.payments.values()))
            opened = self._opened.pop((message.market, message.round), None)
            if opened is not None:
                self.round_close.observe(time.monotonic() - opened)

    def replied(self, request_type: str | None, reply: Message | bytes) -> None:
        """Count the answer to a request of ``request_type`` (None when it was not even a map)."""
        if type(reply) is BidAccepted:
            self._accepted.inc()
        elif request_type == "sync_request" and isinstance(reply, bytes):
            self.resyncs.inc()
        elif isinstance(reply, Error) and request_type == "sealed_bid":
            refused = self._refused.get(reply.code)
            if refused is None:  # one child per error code, looked up once (floods are refused in bulk)
                refused = self._refused[reply.code] = self.bids.labels(reply.code)
            refused.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

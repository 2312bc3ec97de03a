"""The auctioneer's Prometheus metrics (``/metrics`` on ``serve --http``), in a registry of its own.

Fed by the server (every broadcast, every reply) and the ledger (every commit's duration); live
agents and open markets are read from the exchange when scraped. Every event and every scrape
happens on the server's event loop, so the counts are plain numbers (no lock per event: they are
counted on the path of every bid) and the Prometheus families are built from them when scraped.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from auctioneer.exchange import Exchange
from protocol.messages import BidAccepted, Error, MarketClosed, Message, RoundOpen, RoundResult

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ACCEPTED = "accepted"


class LatencyHistogram:
    """Observations counted in :data:`LATENCY_BUCKETS` (a bucket holds values up to its bound)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    def family(self, name: str, documentation: str, created: float) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family = HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.sum)
        family.add_sample(f"{name}_created", {}, created)
        return family


class AuctioneerMetrics(Collector):
    """Rounds, bids, revenue, resyncs, commit and round-close times of one auctioneer process."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.created = time.time()
        self.rounds = 0
        self.revenue = 0.0
        self.bids: Counter[str] = Counter({ACCEPTED: 0})  # sealed bids answered, by outcome
        self.resyncs = 0
        self.requests: Counter[tuple[str, str]] = Counter()  # (request type, "ok" or the error code)
        self.dropped = 0  # requests over their connection's or address's budget, dropped unread
        self.round_close = LatencyHistogram()
        self.commit = LatencyHistogram()
        self._opened: dict[tuple[str | None, int], float] = {}  # (market, round) -> when it opened
        exchange.ledger.on_commit = self.commit.observe
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def broadcast(self, message: Message) -> None:
        """Count a message the feed published."""
        if isinstance(message, RoundOpen):
            self._opened[(message.market, message.round)] = time.monotonic()
        elif isinstance(message, RoundResult):
            self.rounds += 1
            self.revenue += sum(message.payments.values())
            opened = self._opened.pop((message.market, message.round), None)
            if opened is not None:
                self.round_close.observe(time.monotonic() - opened)
        elif isinstance(message, MarketClosed):
            self._opened.pop((message.market, message.rounds + 1), None)  # a round abandoned by the close

    @property
    def rounds_in_progress(self) -> int:
        """Rounds announced whose result has not been published (their opening time kept to time it)."""
        return len(self._opened)

    def replied(self, request_type: str | None, reply: Message | bytes) -> None:
        """Count the answer to a request of ``request_type`` (None when it was not even a map)."""
        outcome = reply.code if isinstance(reply, Error) else "ok"
        self.requests[(request_type or "undecodable", outcome)] += 1
        if type(reply) is BidAccepted:
            self.bids[ACCEPTED] += 1
        elif request_type == "sync_request" and isinstance(reply, bytes):
            self.resyncs += 1
        elif isinstance(reply, Error) and request_type == "sealed_bid":
            self.bids[reply.code] += 1

    def collect(self) -> Iterator[Metric]:
        created = self.created

        def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, documentation, value=value, created=created)

        yield counter("token_auction_rounds_committed", "Rounds committed", self.rounds)
        yield counter("token_auction_revenue", "Sum of all payments", self.revenue)
        bids = CounterMetricFamily(
            "token_auction_bids", "Sealed bids answered, by outcome (accepted or the error code)", labels=["outcome"]
        )
        for outcome, count in self.bids.items():
            bids.add_metric([outcome], count, created=created)
        yield bids
        yield counter("token_auction_resyncs_served", "sync_request answered", self.resyncs)
        requests = CounterMetricFamily(
            "token_auction_requests",
            "Requests answered, by type and outcome (ok or the error code)",
            labels=["type", "outcome"],
        )
        for (kind, outcome), count in sorted(self.requests.items()):
            requests.add_metric([kind, outcome], count, created=created)
        yield requests
        yield counter(
            "token_auction_requests_dropped",
            "Requests over their connection's or address's budget, dropped unread",
            self.dropped,
        )
        yield self.round_close.family(
            "token_auction_round_close_seconds", "From a round's opening to its result's broadcast", created
        )
        yield self.commit.family(
            "token_auction_ledger_commit_seconds", "Duration of one ledger commit (one fsync)", created
        )
        live = len(self.exchange.live_agents())
        yield GaugeMetricFamily("token_auction_live_agents", "Agents heard from recently", value=live)
        yield GaugeMetricFamily(
            "token_auction_open_markets", "Markets open in the exchange", value=len(self.exchange.markets)
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

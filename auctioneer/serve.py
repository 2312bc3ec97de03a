"""Running an exchange process: its ledger, the :class:`Exchange`, CurveZMQ if configured, the server.

:func:`serve` opens the markets the settings ask for (resuming what the ledger holds) and runs until
every market opened at start has closed (unless ``stay``), or until ``stop`` is set: open rounds are
then abandoned, never half-committed, and the same settings on the same ledger continue every market.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
from collections.abc import Callable, Coroutine
from typing import Any

from auctioneer.exchange import Exchange
from auctioneer.ledger import PostgresLedger, holding, open_ledger
from auctioneer.metrics import AuctioneerMetrics
from auctioneer.security import CurveServer
from auctioneer.server import AuctioneerServer, EndpointError, Observer
from auctioneer.settings import ServeSettings
from auctioneer.shards import PostgresShard
from protocol.sockets import is_loopback_endpoint

log = logging.getLogger(__name__)

YOUNG_COLLECTION_EVERY = 20_000

Started = Callable[[Exchange, AuctioneerMetrics], Coroutine[Any, Any, None]]
"""Runs beside the server once the exchange is up; cancelled when the server stops."""


async def serve(
    settings: ServeSettings,
    observer: Observer | None = None,
    stop: asyncio.Event | None = None,
    started: Started | None = None,
) -> Exchange:
    """Serve the exchange of ``settings`` until it is finished or ``stop`` is set; return it, stopped.

    Raises :class:`~auctioneer.ledger.LedgerError` for a ledger that cannot hold these markets,
    :class:`~protocol.curve.KeyFileError` for unusable keys and
    :class:`~auctioneer.server.EndpointError` for endpoints that cannot be bound, or that other hosts
    could reach without CurveZMQ (unless ``insecure``).

    ``started`` runs beside the server once the exchange is up (the CLI serves its web page and
    metrics there); it is cancelled when the server stops.
    """
    for endpoint in (settings.market, settings.feed):
        if not is_loopback_endpoint(endpoint) and settings.curve_secret is None:
            if not settings.insecure:
                raise EndpointError(
                    f"refusing to bind {endpoint} without CurveZMQ: anyone who can reach it could register, bid "
                    "and hold connections. Pass --curve-secret and --authorized-keys, or --insecure to accept that"
                )
            log.warning("%s is reachable from other hosts and CurveZMQ is off (--insecure)", endpoint)
    raise_descriptor_limit()
    curve = CurveServer(settings) if settings.curve_secret is not None else None
    with (
        holding(settings.db),
        open_ledger(settings.db, shard=settings.shard_name(), lease_seconds=settings.lease_seconds) as ledger,
    ):
        shard = (
            PostgresShard(ledger, *settings.advertised(), settings.lease_seconds)
            if isinstance(ledger, PostgresLedger)
            else None
        )
        exchange = Exchange(settings, ledger, shard=shard)
        exchange.start()
        keep_collector_off_the_round_path()
        metrics = AuctioneerMetrics(exchange)
        server = AuctioneerServer(exchange, observer, metrics)
        if curve is not None:
            server.configure_curve(curve)
        helpers = [asyncio.create_task(_stop_when_set(stop, server))] if stop is not None else []
        if started is not None:
            helpers.append(asyncio.create_task(started(exchange, metrics)))
        try:
            await server.run()
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            exchange.shard.stop()  # another shard takes its markets at once
        return exchange


def keep_collector_off_the_round_path() -> None:
    """Tune Python's cyclic garbage collector for a long-running exchange.

    Everything alive once the exchange has started (modules, models, the markets it resumed) is
    frozen out of collection, and the youngest generation is collected every
    ``YOUNG_COLLECTION_EVERY`` allocations instead of every 700: with a thousand open markets a
    full collection scanned every live object, took tens of milliseconds in the middle of a round,
    and collections took about a sixth of the exchange's time. Reference counting still frees
    everything without cycles at once; only cyclic garbage waits a little longer.
    """
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, oldest)


def raise_descriptor_limit() -> None:
    """Raise this process's open-file limit to its hard limit: every connection holds a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log.info("up to %d open descriptors (connections)", hard)


async def _stop_when_set(stop: asyncio.Event, server: AuctioneerServer) -> None:
    await stop.wait()
    server.stop()

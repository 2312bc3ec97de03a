"""Running a market process: its ledger, its :class:`Market`, CurveZMQ if configured, and the server.

:func:`serve` runs until the market closes or ``stop`` is set (the open round is then abandoned,
never half-committed; the same settings on the same ledger continue the market).
"""

from __future__ import annotations

import asyncio
import logging

from auctioneer.ledger import Ledger
from auctioneer.market import Market
from auctioneer.security import CurveServer
from auctioneer.server import AuctioneerServer, Observer
from auctioneer.settings import ServeSettings
from protocol.messages import MarketClosed
from protocol.sockets import is_loopback_endpoint

log = logging.getLogger(__name__)


async def serve(
    settings: ServeSettings, observer: Observer | None = None, stop: asyncio.Event | None = None
) -> MarketClosed | None:
    """Serve the market of ``settings`` until it closes (its closing) or ``stop`` is set (``None``).

    Raises :class:`~auctioneer.ledger.LedgerError` for a ledger that cannot hold this market,
    :class:`~protocol.curve.KeyFileError` for unusable keys and
    :class:`~auctioneer.server.EndpointError` for endpoints that cannot be bound.
    """
    for endpoint in (settings.market, settings.feed):
        if not is_loopback_endpoint(endpoint) and settings.curve_secret is None:
            log.warning(
                "%s is reachable from other hosts and CurveZMQ is off: anyone who can connect can bid under "
                "any name. Use --curve-secret/--authorized-keys.",
                endpoint,
            )
    curve = CurveServer(settings) if settings.curve_secret is not None else None
    with Ledger(settings.db) as ledger:
        market = Market(settings, ledger)
        if market.closed is not None:
            log.info("the market in %s already closed (%s)", settings.db, market.closed.reason)
            return market.closed
        server = AuctioneerServer(market, observer)
        if curve is not None:
            server.configure_curve(curve)
        stopper = asyncio.create_task(_stop_when_set(stop, server)) if stop is not None else None
        try:
            return await server.run()
        finally:
            if stopper is not None:
                stopper.cancel()


async def _stop_when_set(stop: asyncio.Event, server: AuctioneerServer) -> None:
    await stop.wait()
    server.stop()

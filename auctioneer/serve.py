"""Running an exchange process: its ledger, the :class:`Exchange`, CurveZMQ if configured, the server.

:func:`serve` opens the markets the settings ask for (resuming what the ledger holds) and runs until
every market opened at start has closed (unless ``stay``), or until ``stop`` is set: open rounds are
then abandoned, never half-committed, and the same settings on the same ledger continue every market.
"""

from __future__ import annotations

import asyncio
import logging

from auctioneer.exchange import Exchange
from auctioneer.ledger import Ledger
from auctioneer.security import CurveServer
from auctioneer.server import AuctioneerServer, Observer
from auctioneer.settings import ServeSettings
from protocol.sockets import is_loopback_endpoint

log = logging.getLogger(__name__)


async def serve(
    settings: ServeSettings, observer: Observer | None = None, stop: asyncio.Event | None = None
) -> Exchange:
    """Serve the exchange of ``settings`` until it is finished or ``stop`` is set; return it, stopped.

    Raises :class:`~auctioneer.ledger.LedgerError` for a ledger that cannot hold these markets,
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
        exchange = Exchange(settings, ledger)
        exchange.start()
        server = AuctioneerServer(exchange, observer)
        if curve is not None:
            server.configure_curve(curve)
        stopper = asyncio.create_task(_stop_when_set(stop, server)) if stop is not None else None
        try:
            await server.run()
        finally:
            if stopper is not None:
                stopper.cancel()
        return exchange


async def _stop_when_set(stop: asyncio.Event, server: AuctioneerServer) -> None:
    await stop.wait()
    server.stop()

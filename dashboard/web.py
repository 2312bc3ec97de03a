"""The dashboard's web side: a Starlette app serving the page (``static/``), its state as JSON and
server-sent events, and ``/metrics`` in the Prometheus text format; and :func:`serve_http`, which
runs it with uvicorn inside the caller's event loop.

Routes: ``/`` the page; ``/api/state?market=ID`` everything once; ``/events?market=ID`` the same as
a stream (the first event has every round, later ones only new rounds, at most ``EVENTS_PER_SECOND``
a second, and a comment every few seconds so proxies keep the stream open); ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dashboard.board import Board
from protocol.errors import UserError

STATIC = Path(__file__).with_name("static")
EVENTS_PER_SECOND = 5
KEEPALIVE_SECONDS = 5.0
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HttpAddressError(UserError):
    """The dashboard's HTTP address cannot be used (malformed, or the port cannot be bound)."""


def chosen_market(board: Board, requested: str | None) -> str | None:
    """The requested market, else the first open one, else the most recent."""
    if requested:
        return requested
    listing = board.listing()
    return listing[0]["id"] if listing else None


def dashboard_app(board: Board, metrics: Callable[[], bytes]) -> Starlette:
    """The web app over ``board``; ``metrics`` renders ``/metrics``."""

    async def page(_: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def state(request: Request) -> Response:
        return JSONResponse(board.state(chosen_market(board, request.query_params.get("market"))))

    async def events(request: Request) -> Response:
        return StreamingResponse(
            _event_stream(board, request.query_params.get("market")),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def scrape(_: Request) -> Response:
        return Response(metrics(), media_type=METRICS_TYPE)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/state", state),
            Route("/events", events),
            Route("/metrics", scrape),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )


async def _event_stream(board: Board, requested: str | None) -> AsyncIterator[str]:
    sent_version, since, quiet = -1, 0, 0.0
    market = chosen_market(board, requested)
    while True:
        if board.version != sent_version:
            market = market or chosen_market(board, requested)
            sent_version = board.version
            update = board.state(market, since)
            update["full"] = since == 0
            rounds = update.get("market", {}).get("rounds", [])
            if rounds:
                since = rounds[-1]["round"]
            yield f"data: {json.dumps(update)}\n\n"
            quiet = 0.0
        elif quiet >= KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            quiet = 0.0
        await asyncio.sleep(1 / EVENTS_PER_SECOND)
        quiet += 1 / EVENTS_PER_SECOND


class BoardCollector(Collector):
    """The dashboard's own metrics, read from the board when scraped."""

    def __init__(self, board: Board) -> None:
        self.board = board

    def collect(self) -> Iterator[Any]:
        markets = list(self.board.markets.values())
        yield CounterMetricFamily(
            "token_auction_rounds_committed", "Rounds seen committed", value=sum(len(m.rounds) for m in markets)
        )
        yield CounterMetricFamily(
            "token_auction_revenue", "Sum of the payments seen", value=sum(m.revenue for m in markets)
        )
        yield GaugeMetricFamily(
            "token_auction_open_markets", "Markets open", value=sum(m.closed is None for m in markets)
        )
        yield CounterMetricFamily(
            "token_auction_dashboard_resyncs", "Resyncs this dashboard made", value=self.board.resyncs
        )
        yield GaugeMetricFamily(
            "token_auction_auctioneer_reachable", "1 if the auctioneer answers", value=int(self.board.reachable)
        )


def board_metrics(board: Board) -> Callable[[], bytes]:
    registry = CollectorRegistry()
    registry.register(BoardCollector(board))
    return lambda: generate_latest(registry)


def bind_http(address: str) -> socket.socket:
    """A listening socket on ``HOST:PORT`` (port 0: any free port), or :class:`HttpAddressError`."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise HttpAddressError(f"--http wants HOST:PORT, for example 127.0.0.1:8080 (got {address!r})")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise HttpAddressError(f"cannot serve HTTP on {address}: {exc.strerror}") from None
    sock.listen(128)
    return sock


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside someone else's event loop: the host process handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(app: Starlette, sock: socket.socket) -> None:
    """Serve ``app`` on the bound ``sock`` until cancelled."""
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = _EmbeddedServer(config)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()

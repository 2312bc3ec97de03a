from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulation.postgres_server import PostgresServer
from tests.helpers import MarketRun

# Each test process, and every process a test starts (they inherit it), runs torch on one thread: the
# suite's two workers share two cores, and a model's pass on both would starve the other worker's
# timing-sensitive tests (leases, heartbeats).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def market_run(tmp_path: Path) -> Iterator[MarketRun]:
    """A market on free loopback ports whose processes are always stopped after the test."""
    run = MarketRun(tmp_path)
    try:
        yield run
    finally:
        run.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for this test session (a test that needs one fails without it)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database of the session's server, for this test alone."""
    return postgres_server.create_database(f"test_{uuid.uuid4().hex[:12]}")

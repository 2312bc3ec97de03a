from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import MarketRun


@pytest.fixture
def market_run(tmp_path: Path) -> Iterator[MarketRun]:
    """A market on free loopback ports whose processes are always stopped after the test."""
    run = MarketRun(tmp_path)
    try:
        yield run
    finally:
        run.stop()

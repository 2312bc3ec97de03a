"""Timing helpers and the figure record every benchmark section reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Figure:
    """One measured number: ``key`` is stable (used in ``--json``), ``label`` is for people."""

    section: str
    key: str
    label: str
    value: float
    unit: str


def best_time(fn: Callable[[], object], repeats: int = 3, min_seconds: float = 0.05) -> float:
    """Best-of-``repeats`` seconds per call, each repeat looping until ``min_seconds`` have passed."""
    best = float("inf")
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / calls)
    return best

"""Mechanism benchmark: the numpy mechanism against the pure-Python oracle (``auctioneer.mechanism.oracle``).

For ``first_price`` the oracle runs in full. For ``second_price`` its Myerson integral (a full
aggregation per quadrature node per agent) is timed on a sample of agents at 128 nodes, the same
count of allocation evaluations as the numpy quadrature, and scaled to all agents; the report says so.
"""

from __future__ import annotations

import time
from functools import partial

import numpy as np

from auctioneer.mechanism import SparseDistribution, oracle, run_auction
from benchmarks.timing import Figure, best_time
from protocol.market_rules import MechanismSettings

SEED = bytes(32)
ORACLE_NODES = 128


def random_market(
    n_agents: int, support: int, rng: np.random.Generator, dense: bool = False
) -> tuple[list[dict[str, float]], list[float]]:
    pool = [f" tok{i}" for i in range(support if dense else 4 * support)]
    dists = []
    for _ in range(n_agents):
        chosen = pool if dense else list(rng.choice(pool, size=support, replace=False))
        probs = rng.dirichlet(np.ones(len(chosen)))
        dists.append(dict(zip(chosen, probs.tolist(), strict=True)))
    return dists, rng.uniform(0.1, 5.0, size=n_agents).tolist()


def numpy_round(dists: list[SparseDistribution], bids: list[float], config: MechanismSettings) -> None:
    run_auction(dists, bids, config, SEED)


def oracle_seconds(dists: list[dict[str, float]], bids: list[float], aggregation: str, payment: str) -> float:
    n = len(dists)
    start = time.perf_counter()
    q = oracle.aggregate(dists, bids, n, aggregation)
    oracle.choose(q, SEED, "sample")
    if payment != "second_price":
        oracle.payments(dists, bids, n, aggregation, payment)
        return time.perf_counter() - start
    base = time.perf_counter() - start
    sample = min(n, 3 if n < 16 else 1)
    saved, oracle.SIMPSON_INTERVALS = oracle.SIMPSON_INTERVALS, ORACLE_NODES
    try:
        start = time.perf_counter()
        for i in range(sample):
            oracle.myerson_payment(i, dists, bids, n, aggregation)
        per_agent = (time.perf_counter() - start) / sample
    finally:
        oracle.SIMPSON_INTERVALS = saved
    return base + per_agent * n


def run(quick: bool = False) -> list[Figure]:
    rng = np.random.default_rng(0)
    shapes = [(3, 2, False), (100, 64, False), (1000, 256, False), (16, 50257, True)]
    if quick:
        shapes = [(3, 2, False), (100, 64, False), (1000, 256, False)]
    figures = []
    for n, k, dense in shapes:
        dists, bids = random_market(n, k, rng, dense)
        sparse = [SparseDistribution.from_mapping(d) for d in dists]
        for aggregation in ("linear", "log_linear"):
            for payment in ("first_price", "second_price"):
                if quick and aggregation == "log_linear" and n >= 1000:
                    continue
                config = MechanismSettings(aggregation=aggregation, payment=payment)
                fast = best_time(partial(numpy_round, sparse, bids, config))
                slow = oracle_seconds(dists, bids, aggregation, payment)
                shape = f"{n}x{k}{' dense' if dense else ''}"
                suffix = "" if aggregation == "linear" else "_log_linear"
                key = f"mechanism_speedup_{n}x{k}{suffix}" + ("" if payment == "second_price" else "_first_price")
                figures.append(
                    Figure(
                        "mechanism",
                        f"mechanism_ms_{n}x{k}{suffix}_{payment}",
                        f"numpy {aggregation} {payment} {shape}",
                        fast * 1e3,
                        "ms",
                    )
                )
                figures.append(
                    Figure("mechanism", key, f"speedup over oracle, {aggregation} {payment} {shape}", slow / fast, "x")
                )
    return figures

"""Mechanism benchmark: the numpy mechanism against the pure-Python oracle (``auctioneer.mechanism.oracle``).

For ``first_price`` the oracle runs in full. For ``second_price`` its Myerson integral (a full
aggregation per quadrature node per agent) is timed on a sample of agents at 128 nodes, the same
count of allocation evaluations as the numpy quadrature, and scaled to all agents. For
``critical_bid`` (with ``stable``) the oracle's bisection is timed on a sample of agents and scaled;
in a random market no single agent of a thousand is pivotal, so each costs the oracle two
aggregations, and a second market with one pivotal agent times a whole bisection (the oracle's
cost for every agent whose bid decides the token). The report says so.
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


def oracle_seconds(
    dists: list[dict[str, float]], bids: list[float], aggregation: str, payment: str, mode: str
) -> float:
    n = len(dists)
    start = time.perf_counter()
    q = oracle.aggregate(dists, bids, n, aggregation)
    oracle.choose(q, SEED, mode)
    if payment not in ("second_price", "critical_bid"):
        oracle.payments(dists, bids, n, aggregation, payment)
        return time.perf_counter() - start
    base = time.perf_counter() - start
    sample = min(n, 3 if n < 16 else 1)
    if payment == "critical_bid":
        round_ = oracle.Round(dists, bids, n, aggregation, SEED, mode, 1.0, 1e-6)
        start = time.perf_counter()
        for i in range(sample):
            round_.critical_bid(i)
        return base + (time.perf_counter() - start) / sample * n
    saved, oracle.SIMPSON_INTERVALS = oracle.SIMPSON_INTERVALS, ORACLE_NODES
    try:
        start = time.perf_counter()
        for i in range(sample):
            oracle.myerson_payment(i, dists, bids, n, aggregation)
        per_agent = (time.perf_counter() - start) / sample
    finally:
        oracle.SIMPSON_INTERVALS = saved
    return base + per_agent * n


def with_pivotal_agent(dists: list[dict[str, float]], bids: list[float]) -> tuple[list[dict[str, float]], list[float]]:
    """The same market with agent 0 wanting one token that does not win without it, alone, and bidding
    ten times everyone else: its token wins, so the oracle must bisect for its critical bid."""
    others = oracle.aggregate(dists[1:], bids[1:], len(dists) - 1, "linear")
    without = oracle.choose(others, SEED, "stable")
    favourite = next(token for token in sorted(others) if token != without)
    return [{favourite: 1.0}, *dists[1:]], [10 * sum(bids[1:]), *bids[1:]]


RULES = [("first_price", "sample"), ("second_price", "sample"), ("critical_bid", "stable")]


def speedup_key(payment: str, shape: str) -> str:
    """The figure's ``--json`` key: second_price is the historical unmarked one."""
    if payment == "second_price":
        return f"mechanism_speedup_{shape}"
    if payment == "critical_bid":
        return f"mechanism_speedup_critical_{shape}"
    return f"mechanism_speedup_{shape}_{payment}"


def run(quick: bool = False) -> list[Figure]:
    rng = np.random.default_rng(0)
    shapes = [(3, 2, False), (100, 64, False), (1000, 256, False), (16, 50257, True)]
    if quick:
        shapes = [(3, 2, False), (100, 64, False), (1000, 256, False)]
    figures = []
    for n, k, dense in shapes:
        dists, bids = random_market(n, k, rng, dense)
        for aggregation in ("linear", "log_linear"):
            for payment, mode in RULES:
                if quick and aggregation == "log_linear" and n >= 1000:
                    continue
                suffix = "" if aggregation == "linear" else "_log_linear"
                label = f"{aggregation} {payment} {n}x{k}{' dense' if dense else ''}"
                figures += compare(dists, bids, aggregation, payment, mode, f"{n}x{k}{suffix}", label)
        if n == 1000 and not quick:
            pivotal_dists, pivotal_bids = with_pivotal_agent(dists, bids)
            figures += compare(
                pivotal_dists, pivotal_bids, "linear", "critical_bid", "stable", "pivotal_1000x256", "one pivotal agent"
            )
    return figures


def compare(
    dists: list[dict[str, float]], bids: list[float], aggregation: str, payment: str, mode: str, shape: str, label: str
) -> list[Figure]:
    """The numpy mechanism's time per round and its speedup over the oracle on one market."""
    config = MechanismSettings(aggregation=aggregation, payment=payment, mode=mode)
    sparse = [SparseDistribution.from_mapping(d) for d in dists]
    fast = best_time(partial(numpy_round, sparse, bids, config))
    slow = oracle_seconds(dists, bids, aggregation, payment, mode)
    return [
        Figure("mechanism", f"mechanism_ms_{shape}_{payment}", f"numpy {label}", fast * 1e3, "ms"),
        Figure("mechanism", speedup_key(payment, shape), f"speedup over oracle, {label}", slow / fast, "x"),
    ]

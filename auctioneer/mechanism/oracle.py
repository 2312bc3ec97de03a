"""A slow, obviously-correct pure-Python reading of docs/mechanism.md: the oracle for the numpy code.

The tests check the mechanism against it and the benchmarks measure the mechanism's speedup over it.
Dicts and loops only, straight from the formulas; no numpy, no code shared with the rest of this
package (whose ``__init__`` does not import it). The Myerson integral is computed by composite
Simpson's rule (in ``u = ln(1 + s / B_-i)``, where the allocation changes on the scale of ``B_-i``)
with many intervals.
"""

from __future__ import annotations

import hashlib
import math

Dist = dict[str, float]
SIMPSON_INTERVALS = 2000


def vocabulary(dists: list[Dist]) -> list[str]:
    tokens: set[str] = set()
    for d in dists:
        tokens.update(d)
    return sorted(tokens, key=lambda t: t.encode("utf-8"))


def weights(bids: list[float], n_agents: int) -> list[float]:
    total = sum(bids)
    if total > 0:
        return [b / total for b in bids]
    counted = n_agents if n_agents else len(bids)
    return [1.0 / counted if i < counted else 0.0 for i in range(len(bids))]


def aggregate(dists: list[Dist], bids: list[float], n_agents: int, rule: str, eps: float = 1e-6) -> Dist:
    """Rows are agents followed by the reference; ``bids`` likewise."""
    vocab = vocabulary(dists)
    lam = weights(bids, n_agents)
    if rule == "linear":
        return {t: sum(lam[i] * dists[i].get(t, 0.0) for i in range(len(dists))) for t in vocab}
    logits = {}
    for t in vocab:
        logits[t] = sum(
            lam[i] * math.log((1 - eps) * dists[i].get(t, 0.0) + eps / len(vocab)) for i in range(len(dists))
        )
    top = max(logits.values())
    unnorm = {t: math.exp(v - top) for t, v in logits.items()}
    z = sum(unnorm.values())
    return {t: v / z for t, v in unnorm.items()}


def total_variation(p: Dist, q: Dist) -> float:
    return 0.5 * sum(abs(p.get(t, 0.0) - q.get(t, 0.0)) for t in set(p) | set(q))


def allocation(i: int, s: float, dists: list[Dist], bids: list[float], n_agents: int, rule: str) -> float:
    trial = list(bids)
    trial[i] = s
    return 1.0 - total_variation(dists[i], aggregate(dists, trial, n_agents, rule))


def myerson_payment(i: int, dists: list[Dist], bids: list[float], n_agents: int, rule: str) -> float:
    b = bids[i]
    rest = sum(bids) - b
    if b == 0 or rest == 0:
        return 0.0
    upper = math.log(1 + b / rest)
    h = upper / SIMPSON_INTERVALS
    integral = 0.0
    for k in range(SIMPSON_INTERVALS + 1):
        u = k * h
        s = rest * (math.exp(u) - 1)
        coeff = 1 if k in (0, SIMPSON_INTERVALS) else (4 if k % 2 else 2)
        integral += coeff * allocation(i, s, dists, bids, n_agents, rule) * (s + rest)
    integral *= h / 3
    return b * allocation(i, b, dists, bids, n_agents, rule) - integral


def payments(dists: list[Dist], bids: list[float], n_agents: int, aggregation: str, rule: str) -> list[float]:
    if rule == "none" or sum(bids) == 0:
        return [0.0] * n_agents
    if rule == "first_price":
        return list(bids[:n_agents])
    return [myerson_payment(i, dists, bids, n_agents, aggregation) for i in range(n_agents)]


def uniform(seed: bytes) -> float:
    return int.from_bytes(hashlib.sha256(seed + b"token").digest()[:8], "big") / 2**64


def choose(q: Dist, seed: bytes, mode: str, temperature: float = 1.0) -> str:
    vocab = sorted(q, key=lambda t: t.encode("utf-8"))
    if mode == "greedy":
        best = vocab[0]
        for t in vocab:
            if q[t] > q[best]:
                best = t
        return best
    powered = {t: (q[t] ** (1 / temperature) if q[t] > 0 else 0.0) for t in vocab}
    total = sum(powered.values())
    u = uniform(seed)
    cumulative = 0.0
    for t in vocab:
        cumulative += powered[t] / total
        if cumulative > u:
            return t
    return [t for t in vocab if powered[t] > 0][-1]

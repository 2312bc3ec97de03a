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


def payments(
    dists: list[Dist],
    bids: list[float],
    n_agents: int,
    aggregation: str,
    rule: str,
    seed: bytes = bytes(32),
    mode: str = "sample",
    temperature: float = 1.0,
    eps: float = 1e-6,
) -> list[float]:
    if rule == "none" or sum(bids) == 0:
        return [0.0] * n_agents
    if rule == "first_price":
        return list(bids[:n_agents])
    if rule == "critical_bid":
        round_ = Round(dists, bids, n_agents, aggregation, seed, mode, temperature, eps)
        return [round_.critical_bid(i) for i in range(n_agents)]
    return [myerson_payment(i, dists, bids, n_agents, aggregation) for i in range(n_agents)]


def uniform(seed: bytes) -> float:
    return int.from_bytes(hashlib.sha256(seed + b"token").digest()[:8], "big") / 2**64


def race_noise(token: str, seed: bytes) -> float:
    """``E_t``: the exponential variable of the seed and the token alone."""
    digest = hashlib.sha256(seed + b"race" + token.encode("utf-8")).digest()
    return -math.log((int.from_bytes(digest[:8], "big") + 0.5) / 2**64)


def race_scores(q: Dist, seed: bytes, mode: str, temperature: float = 1.0) -> dict[str, float]:
    """``ln q(t) - T ln E_t`` for every token with ``q(t) > 0`` (``E_t = 1`` under greedy), canonical order."""
    scores = {}
    for t in sorted(q, key=lambda t: t.encode("utf-8")):
        if q[t] > 0:
            noise = 1.0 if mode == "greedy" else race_noise(t, seed)
            scores[t] = math.log(q[t]) - temperature * math.log(noise)
    return scores


def choose(q: Dist, seed: bytes, mode: str, temperature: float = 1.0) -> str:
    vocab = sorted(q, key=lambda t: t.encode("utf-8"))
    if mode == "greedy":  # the largest q itself (its log can merge two nearly equal q into a tie)
        return max((t for t in vocab if q[t] > 0), key=q.__getitem__)
    if mode == "stable":
        best, best_score = "", -math.inf
        for t, score in race_scores(q, seed, mode, temperature).items():
            if score > best_score:
                best, best_score = t, score
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


class Round:
    """One round, to ask what agent ``i``'s bid changes (critical bids by bisection)."""

    BISECTION_STEPS = 200

    def __init__(
        self,
        dists: list[Dist],
        bids: list[float],
        n_agents: int,
        aggregation: str,
        seed: bytes,
        mode: str,
        temperature: float,
        eps: float,
    ) -> None:
        self.dists, self.bids, self.n_agents = dists, bids, n_agents
        self.aggregation, self.seed, self.mode, self.temperature, self.eps = aggregation, seed, mode, temperature, eps

    def winner_at(self, i: int, s: float) -> str:
        """The token drawn when agent ``i`` bids ``s`` and everything else stays."""
        trial = list(self.bids)
        trial[i] = s
        q = aggregate(self.dists, trial, self.n_agents, self.aggregation, self.eps)
        return choose(q, self.seed, self.mode, self.temperature)

    def critical_bid(self, i: int) -> float:
        """The lowest bid at which the token drawn at ``b_i`` is still drawn, by bisection."""
        b = self.bids[i]
        if b == 0 or sum(self.bids) - b == 0:
            return 0.0
        won = self.winner_at(i, b)
        if self.winner_at(i, 0.0) == won:
            return 0.0
        low, high = 0.0, b
        for _ in range(self.BISECTION_STEPS):
            middle = (low + high) / 2
            if middle in (low, high):
                break
            if self.winner_at(i, middle) == won:
                high = middle
            else:
                low = middle
        return high


def sponsors(dists: list[Dist], bids: list[float], token: str) -> list[float]:
    """Every row's share of the pull on ``token``: ``b_i p_i(w) / sum_j b_j p_j(w)``."""
    pulls = [b * d.get(token, 0.0) for d, b in zip(dists, bids, strict=True)]
    total = sum(pulls)
    return [p / total if total > 0 else 0.0 for p in pulls]

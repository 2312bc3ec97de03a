"""Aggregation rules: how bid-weighted agent distributions become one outcome distribution ``q``.

Every rule is a function ``aggregate(P, weights, eps) -> q`` over a dense matrix ``P`` (one row per
participant, the operator's reference distribution included as a row) and normalised weights
``lambda_i = b_i / B``. Second-price payments also need the counterfactual aggregate with one
agent's bid replaced by ``s``; a rule may provide a vectorised ``counterfactual`` for that, or the
generic (slow, looping) one is used. Critical-bid payments need the rule's ``lines``: the winner at
agent ``i``'s bid ``s`` is ``argmax_t (a_t + s c_t)`` (docs/mechanism.md section 5); a rule without
lines cannot be combined with ``critical_bid``. A new rule is one function plus one ``AGGREGATIONS`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from auctioneer.mechanism.vocabulary import FloatArray

AggregateFn = Callable[[FloatArray, FloatArray, float], FloatArray]
# counterfactual(P, bids, agent_rows, s, eps) -> q with shape (len(agent_rows), s.shape[1], |V|):
# the aggregate when row ``agent_rows[a]`` bids ``s[a, k]`` instead of ``bids[agent_rows[a]]``.
CounterfactualFn = Callable[[FloatArray, FloatArray, np.ndarray, FloatArray, float], FloatArray]
# lines(P, bids, log_noise, temperature, eps) -> a function of agent rows giving (a, c), each
# (len(rows), |V|); the terms shared by every agent are computed once, when ``lines`` is called.
LinesOf = Callable[[np.ndarray], tuple[FloatArray, FloatArray]]
LinesFn = Callable[[FloatArray, FloatArray, FloatArray, float, float], LinesOf]


def bid_weights(bids: FloatArray, n_agents: int) -> FloatArray:
    """``lambda = bids / B``; if ``B == 0`` each of the first ``n_agents`` rows gets ``1/n_agents``.

    ``bids`` holds the agents' bids followed by any reference weight ``b_0``. With no agents and
    ``B == 0`` the reference alone decides.
    """
    total = float(bids.sum())
    if total > 0:
        return bids / total
    weights = np.zeros_like(bids)
    counted = n_agents if n_agents else len(bids)
    weights[:counted] = 1.0 / counted
    return weights


def linear_aggregate(matrix: FloatArray, weights: FloatArray, eps: float) -> FloatArray:
    """``q(t) = sum_i lambda_i p_i(t)``: the bid-weighted average (minimises ``sum_i b_i KL(p_i||q)``)."""
    return weights @ matrix


def smoothed_log(matrix: FloatArray, eps: float) -> FloatArray:
    """``log p~`` with ``p~ = (1 - eps) p + eps / |V|``, so disjoint supports keep every token alive."""
    return np.log((1.0 - eps) * matrix + eps / matrix.shape[-1])


def _normalise_logits(logits: FloatArray) -> FloatArray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def log_linear_aggregate(matrix: FloatArray, weights: FloatArray, eps: float) -> FloatArray:
    """``q(t) ∝ exp(sum_i lambda_i log p~_i(t))``: the weighted geometric mean (log space, max-shifted)."""
    return _normalise_logits(weights @ smoothed_log(matrix, eps))


def log_linear_counterfactual(
    matrix: FloatArray, bids: FloatArray, agent_rows: np.ndarray, s: FloatArray, eps: float
) -> FloatArray:
    """Vectorised ``q(s, b_-i)`` for ``log_linear``: ``(L - b_i log p~_i + s log p~_i) / (B - b_i + s)``."""
    log_p = smoothed_log(matrix, eps)
    weighted_sum = bids @ log_p
    own = log_p[agent_rows]
    others = weighted_sum - bids[agent_rows, None] * own
    others_total = float(bids.sum()) - bids[agent_rows]
    logits = (others[:, None, :] + s[:, :, None] * own[:, None, :]) / (others_total[:, None, None] + s[:, :, None])
    return _normalise_logits(logits)


def linear_counterfactual(
    matrix: FloatArray, bids: FloatArray, agent_rows: np.ndarray, s: FloatArray, eps: float
) -> FloatArray:
    """Vectorised ``q(s, b_-i)`` for ``linear``: ``(B q - b_i p_i + s p_i) / (B - b_i + s)``."""
    own = matrix[agent_rows]
    others = bids @ matrix - bids[agent_rows, None] * own
    others_total = float(bids.sum()) - bids[agent_rows]
    return (others[:, None, :] + s[:, :, None] * own[:, None, :]) / (others_total[:, None, None] + s[:, :, None])


def linear_lines(
    matrix: FloatArray, bids: FloatArray, log_noise: FloatArray, temperature: float, eps: float
) -> LinesOf:
    """``a_t = (sum_{j != i} b_j p_j(t)) / E_t^T`` (the reference included) and ``c_t = p_i(t) / E_t^T``."""
    scale = np.exp(-temperature * log_noise)
    total = bids @ matrix

    def of(rows: np.ndarray) -> tuple[FloatArray, FloatArray]:
        own = matrix[rows]
        return (total - bids[rows, None] * own) * scale, own * scale

    return of


def log_linear_lines(
    matrix: FloatArray, bids: FloatArray, log_noise: FloatArray, temperature: float, eps: float
) -> LinesOf:
    """``a_t = sum_{j != i} b_j ln p~_j(t) - T B_-i ln E_t`` (the reference included) and
    ``c_t = ln p~_i(t) - T ln E_t``."""
    log_p = smoothed_log(matrix, eps)
    total = bids @ log_p
    bid_total = float(bids.sum())
    shift = temperature * log_noise

    def of(rows: np.ndarray) -> tuple[FloatArray, FloatArray]:
        own = log_p[rows]
        rest = bid_total - bids[rows]
        return total - bids[rows, None] * own - rest[:, None] * shift, own - shift

    return of


@dataclass(frozen=True)
class AggregationRule:
    """A registered aggregation: the rule itself and, optionally, its fast counterfactual and its lines."""

    aggregate: AggregateFn
    counterfactual: CounterfactualFn | None = None
    lines: LinesFn | None = None

    def counterfactuals(
        self, matrix: FloatArray, bids: FloatArray, agent_rows: np.ndarray, s: FloatArray, eps: float
    ) -> FloatArray:
        """``q`` for each agent row and each replacement bid in ``s``; loops if no fast form exists."""
        if self.counterfactual is not None:
            return self.counterfactual(matrix, bids, agent_rows, s, eps)
        out = np.empty((len(agent_rows), s.shape[1], matrix.shape[1]))
        for a, row in enumerate(agent_rows):
            for k, replacement in enumerate(s[a]):
                trial = bids.copy()
                trial[row] = replacement
                out[a, k] = self.aggregate(matrix, trial / trial.sum(), eps)
        return out


AGGREGATIONS: dict[str, AggregationRule] = {
    "linear": AggregationRule(linear_aggregate, linear_counterfactual, linear_lines),
    "log_linear": AggregationRule(log_linear_aggregate, log_linear_counterfactual, log_linear_lines),
}

"""Checking a round result against what was promised, as one agent can from what is published.

Every agent checks the seed commitment and recomputes the token from the published aggregate. An
agent that bid also checks its own bid as listed, its own charge and its own sponsor share, where
the rules let it recompute them from the aggregate ``q``, the listed bids and the reference weight:

- ``first_price`` and ``none``: trivially;
- ``critical_bid``: its lines from ``q`` (docs/mechanism.md section 5); under ``linear`` the others'
  pull is ``B q(t) - b_i p_i(t)``, under ``log_linear`` their weighted log-probabilities are
  ``B ln q(t) - b_i ln p~_i(t)`` up to a constant that cancels;
- ``second_price`` under ``linear``: the closed form, with ``q_-i = (B q - b_i p_i) / B_-i``
  (under other aggregations the integral needs everyone's distributions: not checked);
- its sponsor share under ``linear`` is ``b_i p_i(w) / (B q(w))``; under other aggregations an
  agent checks that its share is positive exactly when it pulled the token, and every result checks
  that the shares sum to 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from protocol.critical_bid import critical_bids
from protocol.draw import expected_token, log_race_noise, seed_commitment
from protocol.market_rules import MechanismSettings
from protocol.messages import RoundResult

TOLERANCE = 1e-6
LINES = ("linear", "log_linear")  # the aggregations whose lines an agent can rebuild from q


@dataclass(frozen=True)
class OwnBid:
    """What this agent sent in a round."""

    name: str
    distribution: Mapping[str, float]
    amount: float


@dataclass(frozen=True)
class PublishedRound:
    """A result's aggregate in canonical order, and one agent's wish and bid on the same tokens."""

    tokens: list[str]
    q: np.ndarray
    own: np.ndarray
    bid: float
    total: float  # B: every listed bid plus the reference weight
    winner: int

    @classmethod
    def of(cls, result: RoundResult, own: OwnBid, reference_weight: float) -> PublishedRound | None:
        if result.distribution is None or result.token is None:
            return None
        order = sorted(range(len(result.distribution.tokens)), key=result.distribution.tokens.__getitem__)
        tokens = [result.distribution.tokens[k] for k in order]
        column = {token: k for k, token in enumerate(tokens)}
        wish = np.zeros(len(tokens))
        for token, probability in own.distribution.items():
            if token not in column:
                return None
            wish[column[token]] = probability
        total = sum(result.bids.values()) + reference_weight
        return cls(tokens, result.distribution.probs[order], wish, own.amount, total, column[result.token])


def result_problems(
    result: RoundResult,
    commitment_seen: str | None,
    mechanism: MechanismSettings,
    own: OwnBid | None = None,
    reference_weight: float = 0.0,
) -> list[str]:
    """Everything wrong with ``result``: an empty list means it verifies."""
    problems = []
    seed = bytes.fromhex(result.seed)
    if seed_commitment(seed) != result.seed_commitment:
        problems.append("sha256(seed) does not match the result's seed_commitment")
    if commitment_seen is not None and commitment_seen != result.seed_commitment:
        problems.append("seed_commitment differs from the one announced at round open")
    if result.distribution is not None and result.token is not None:
        dist = result.distribution
        expected = expected_token(dist.tokens, dist.probs, seed, mechanism.mode, mechanism.temperature)
        if expected != result.token:
            problems.append(f"token {result.token!r} is not the draw from the published distribution ({expected!r})")
    shares = sum(result.sponsors.values())
    if result.sponsors and abs(shares - 1.0) > TOLERANCE:
        problems.append(f"the sponsors' shares sum to {shares:.9g}, not 1")
    if own is not None:
        problems += own_problems(result, mechanism, own, reference_weight)
    return problems


def own_problems(result: RoundResult, mechanism: MechanismSettings, own: OwnBid, reference_weight: float) -> list[str]:
    """What is wrong with this agent's listed bid, charge and sponsor share."""
    listed = result.bids.get(own.name)
    if listed is None:
        if own.amount == 0 and (reference_weight > 0 or any(bid > 0 for bid in result.bids.values())):
            return []  # a zero bid weighs nothing beside a positive bid or a reference: it is left out
        return [f"your acknowledged bid of {own.amount} is missing from the result"]
    if not _close(listed, own.amount):
        return [f"the result lists your bid as {listed}, you sent {own.amount}"]
    published = PublishedRound.of(result, own, reference_weight)
    if published is None:
        return [] if result.token is None else ["the published aggregate lacks a token you bid on"]
    problems = []
    charged = result.payments.get(own.name, 0.0)
    expected = expected_charge(published, mechanism, bytes.fromhex(result.seed))
    if expected is not None and not _close(charged, expected):
        problems.append(f"you were charged {charged:.12g}; the {mechanism.payment} rule gives {expected:.12g}")
    share = result.sponsors.get(own.name, 0.0)
    pull = published.bid * published.own[published.winner]
    if mechanism.aggregation == "linear":
        expected_share = pull / (published.total * published.q[published.winner]) if pull > 0 else 0.0
        if not _close(share, expected_share):
            problems.append(f"your sponsor share is {share:.12g}; your pull on the token gives {expected_share:.12g}")
    elif (share > 0) != (pull > 0):
        problems.append(f"your sponsor share is {share:.12g} but your pull on the token is {pull:.12g}")
    return problems


def expected_charge(published: PublishedRound, mechanism: MechanismSettings, seed: bytes) -> float | None:
    """This agent's payment under ``mechanism``, or None where it cannot be recomputed from the result."""
    b, rest = published.bid, published.total - published.bid
    if mechanism.payment == "none" or b == 0:
        return 0.0
    if mechanism.payment == "first_price":
        return b
    if rest <= 0:
        return 0.0 if mechanism.payment in ("critical_bid", "second_price") else None
    if mechanism.payment == "critical_bid" and mechanism.aggregation in LINES:
        a, c = own_lines(published, mechanism, seed)
        return float(np.clip(critical_bids(a[None, :], c[None, :], published.winner)[0], 0.0, b))
    if mechanism.payment == "second_price" and mechanism.aggregation == "linear":
        without = (published.total * published.q - b * published.own) / rest
        distance = 0.5 * float(np.abs(published.own - without).sum())
        ratio = b / rest
        return float(np.clip(distance * rest * (np.log1p(ratio) - ratio / (1 + ratio)), 0.0, b))
    return None


def own_lines(published: PublishedRound, mechanism: MechanismSettings, seed: bytes) -> tuple[np.ndarray, np.ndarray]:
    """This agent's ``a`` and ``c`` (docs/mechanism.md section 5), from the published aggregate."""
    log_noise = log_race_noise(mechanism.mode, published.tokens, seed)
    b, total, q, own = published.bid, published.total, published.q, published.own
    if mechanism.aggregation == "linear":
        scale = np.exp(-mechanism.temperature * log_noise)
        return (total * q - b * own) * scale, own * scale
    eps = mechanism.eps
    own_log = np.log((1 - eps) * own + eps / len(own))
    shift = mechanism.temperature * log_noise
    with np.errstate(divide="ignore"):
        others = total * np.log(q) - b * own_log
    return others - (total - b) * shift, own_log - shift


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * (1.0 + abs(b))

"""Checking a round result against what was promised: the seed commitment and the token draw."""

from __future__ import annotations

from protocol.draw import expected_token, seed_commitment
from protocol.market_rules import MechanismSettings
from protocol.messages import RoundResult


def result_problems(result: RoundResult, commitment_seen: str | None, mechanism: MechanismSettings) -> list[str]:
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
    return problems

"""The public, verifiable token draw of SPEC.md section 4: seed commitment and the uniform number.

Shared by the auctioneer's mechanism (which draws) and every client (which verifies).
"""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import NDArray


def seed_commitment(seed: bytes) -> str:
    """The hex ``sha256(seed)`` published when a round opens."""
    return hashlib.sha256(seed).hexdigest()


def uniform_draw(seed: bytes) -> float:
    """The round's public uniform number: ``int(sha256(seed + b"token")[:8], big-endian) / 2**64``."""
    digest = hashlib.sha256(seed + b"token").digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def tempered(q: NDArray[np.float64], temperature: float) -> NDArray[np.float64]:
    """``q^(1/T)`` renormalised, computed in log space; zero stays zero."""
    if temperature == 1.0:
        return q
    positive = q > 0
    logits = np.full_like(q, -np.inf)
    logits[positive] = np.log(q[positive]) / temperature
    weights = np.exp(logits - logits[positive].max())
    return weights / weights.sum()


def sample_index(q: NDArray[np.float64], seed: bytes, temperature: float = 1.0) -> int:
    """Index (in canonical order) of the first token whose cumulative probability exceeds the draw."""
    draw_from = tempered(q, temperature)
    index = int(np.searchsorted(np.cumsum(draw_from), uniform_draw(seed), side="right"))
    if index >= len(draw_from):
        index = int(np.flatnonzero(draw_from > 0)[-1])
    return index


def greedy_index(q: NDArray[np.float64], seed: bytes, temperature: float = 1.0) -> int:
    """Index of the most likely token; ties go to the canonically first."""
    return int(np.argmax(q))


def expected_token(tokens: list[str], probs: NDArray[np.float64], seed: bytes, mode: str, temperature: float) -> str:
    """Recompute a round's token from its published distribution and revealed seed."""
    order = sorted(range(len(tokens)), key=tokens.__getitem__)
    q = probs[order]
    pick = greedy_index if mode == "greedy" else sample_index
    return tokens[order[pick(q, seed, temperature)]]

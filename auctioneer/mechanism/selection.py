"""Choosing the token: seed commitment, the public uniform draw, and ``sample`` / ``greedy`` modes.

Deterministic and verifiable: round open publishes ``sha256(seed)``, the result reveals ``seed``,
and anyone can recompute ``u = int(sha256(seed + b"token")[:8]) / 2**64`` and the token: the first
in canonical order whose cumulative probability exceeds ``u`` (the last token with positive
probability if rounding leaves ``u`` at or above the total). ``temperature`` reshapes the draw only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from auctioneer.mechanism.vocabulary import FloatArray

SEED_BYTES = 32


def seed_commitment(seed: bytes) -> str:
    """The hex ``sha256(seed)`` published when a round opens."""
    return hashlib.sha256(seed).hexdigest()


def uniform_draw(seed: bytes) -> float:
    """The round's public uniform number in ``[0, 1)``."""
    digest = hashlib.sha256(seed + b"token").digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def tempered(q: FloatArray, temperature: float) -> FloatArray:
    """``q^(1/T)`` renormalised, computed in log space; zero stays zero."""
    if temperature == 1.0:
        return q
    positive = q > 0
    logits = np.full_like(q, -np.inf)
    logits[positive] = np.log(q[positive]) / temperature
    weights = np.exp(logits - logits[positive].max())
    return weights / weights.sum()


def sample_index(q: FloatArray, seed: bytes, temperature: float) -> int:
    """Index of the first token whose cumulative probability exceeds the seed's draw."""
    draw_from = tempered(q, temperature)
    cumulative = np.cumsum(draw_from)
    index = int(np.searchsorted(cumulative, uniform_draw(seed), side="right"))
    if index >= len(draw_from):
        index = int(np.flatnonzero(draw_from > 0)[-1])
    return index


def greedy_index(q: FloatArray, seed: bytes, temperature: float) -> int:
    """Index of the most likely token; ties go to the canonically first."""
    return int(np.argmax(q))


SELECTION_MODES: dict[str, Callable[[FloatArray, bytes, float], int]] = {
    "sample": sample_index,
    "greedy": greedy_index,
}


def choose_token(vocab: Sequence[str], q: FloatArray, seed: bytes, mode: str, temperature: float) -> str:
    """The round's token under ``mode`` (``sample`` or ``greedy``)."""
    return vocab[SELECTION_MODES[mode](q, seed, temperature)]

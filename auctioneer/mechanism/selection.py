"""Choosing the token: ``sample`` (the verifiable draw of ``protocol.draw``) or ``greedy``.

Deterministic: round open publishes ``sha256(seed)``, the result reveals ``seed``, and anyone can
recompute ``u = int(sha256(seed + b"token")[:8]) / 2**64`` and the token: the first in canonical
order whose cumulative probability exceeds ``u`` (the last token with positive probability if
rounding leaves ``u`` at or above the total). ``temperature`` reshapes the draw only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from auctioneer.mechanism.vocabulary import FloatArray
from protocol.draw import greedy_index, sample_index, seed_commitment, uniform_draw

SEED_BYTES = 32

SELECTION_MODES: dict[str, Callable[[FloatArray, bytes, float], int]] = {
    "sample": sample_index,
    "greedy": greedy_index,
}

__all__ = ["SEED_BYTES", "SELECTION_MODES", "choose_token", "seed_commitment", "uniform_draw"]


def choose_token(vocab: Sequence[str], q: FloatArray, seed: bytes, mode: str, temperature: float) -> str:
    """The round's token under ``mode``; ``vocab`` is in canonical order."""
    return vocab[SELECTION_MODES[mode](q, seed, temperature)]

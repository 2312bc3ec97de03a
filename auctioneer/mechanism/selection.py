"""Choosing the token with the protocol's public draw (``protocol.draw``): one registry of modes.

Deterministic: round open publishes ``sha256(seed)``, the result reveals ``seed``, and anyone can
recompute the token from the published aggregate with the same draw functions the auctioneer uses.
"""

from __future__ import annotations

from collections.abc import Sequence

from auctioneer.mechanism.vocabulary import FloatArray
from protocol.draw import draw_function


def choose_token(vocab: Sequence[str], q: FloatArray, seed: bytes, mode: str, temperature: float) -> str:
    """The round's token under ``mode``; ``vocab`` is in canonical order."""
    return vocab[draw_function(mode)(vocab, q, seed, temperature)]

"""The public, verifiable token draw: seed commitments, the registry of draw modes, the race noise.

The draw is part of the contract (SPEC.md section 4): the auctioneer's mechanism draws with these
functions and every agent and ``auctioneer audit`` recompute the token with the same ones. A mode
is a function ``(tokens, q, seed, temperature) -> index`` over the aggregate ``q`` with its tokens
in canonical order (sorted by UTF-8 bytes). ``DRAW_MODES`` is the only registry of modes; a name
it does not hold is :class:`UnknownDrawMode` everywhere.

``stable`` is an exponential race: every token draws its own noise ``E_t`` from the seed and its
own bytes, and the winner is ``argmax_t [ln q(t) - T ln E_t]``. It samples exactly from
``q^(1/T)``, and a token's noise never depends on the rest of the support, so raising one bid moves
the winner monotonically (docs/mechanism.md section 5).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
DrawFn = Callable[[Sequence[str], FloatArray, bytes, float], int]
SEED_BYTES = 32


class UnknownDrawMode(ValueError):
    """A draw mode that this version of the protocol does not define."""


def seed_commitment(seed: bytes) -> str:
    """The hex ``sha256(seed)`` published when a round opens."""
    return hashlib.sha256(seed).hexdigest()


def uniform_draw(seed: bytes) -> float:
    """The round's public uniform number: ``int(sha256(seed + b"token")[:8], big-endian) / 2**64``."""
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


def sample_index(tokens: Sequence[str], q: FloatArray, seed: bytes, temperature: float) -> int:
    """Index of the first token whose cumulative probability (of ``q^(1/T)``) exceeds the uniform draw."""
    draw_from = tempered(q, temperature)
    index = int(np.add.accumulate(draw_from).searchsorted(uniform_draw(seed), side="right"))
    if index >= len(draw_from):
        index = int(np.flatnonzero(draw_from > 0)[-1])
    return index


def greedy_index(tokens: Sequence[str], q: FloatArray, seed: bytes, temperature: float) -> int:
    """Index of the most likely token; ties go to the canonically first."""
    return int(np.argmax(q))


def race_noise(tokens: Sequence[str], seed: bytes) -> FloatArray:
    """``ln E_t`` per token: ``U_t = (int(sha256(seed + b"race" + utf8(t))[:8], big-endian) + 0.5) / 2**64``
    and ``E_t = -ln U_t`` (an exponential variable of the seed and the token alone)."""
    keyed = hashlib.sha256(seed + b"race")
    draws = np.empty(len(tokens))
    for k, token in enumerate(tokens):
        digest = keyed.copy()
        digest.update(token.encode("utf-8"))
        draws[k] = int.from_bytes(digest.digest()[:8], "big")
    uniform = (draws + 0.5) / 2**64
    return np.log(-np.log(uniform))


def race_winner(q: FloatArray, log_noise: FloatArray, temperature: float) -> int:
    """``argmax_t [ln q(t) - T ln E_t]`` over tokens with ``q(t) > 0``; ties to the canonically first."""
    scores = np.full(len(q), -np.inf)
    positive = q > 0
    scores[positive] = np.log(q[positive]) - temperature * log_noise[positive]
    return int(np.argmax(scores))


def stable_index(tokens: Sequence[str], q: FloatArray, seed: bytes, temperature: float) -> int:
    """The exponential race keyed by the seed and each token's bytes: exactly a draw from ``q^(1/T)``."""
    return race_winner(q, race_noise(tokens, seed), temperature)


DRAW_MODES: dict[str, DrawFn] = {
    "sample": sample_index,
    "greedy": greedy_index,
    "stable": stable_index,
}


def log_race_noise(mode: str, tokens: Sequence[str], seed: bytes) -> FloatArray:
    """``ln E_t`` as the monotone modes use it: the race noise under ``stable``, zero under ``greedy``."""
    if mode == "greedy":
        return np.zeros(len(tokens))
    if mode == "stable":
        return race_noise(tokens, seed)
    raise UnknownDrawMode(f"mode {mode!r} is not monotone in the bids: only greedy and stable have race noise")


def draw_function(mode: str) -> DrawFn:
    """The registered draw of ``mode``; :class:`UnknownDrawMode` if there is none."""
    try:
        return DRAW_MODES[mode]
    except KeyError:
        raise UnknownDrawMode(f"unknown draw mode {mode!r}; this client knows {', '.join(DRAW_MODES)}") from None


def expected_token(tokens: list[str], probs: FloatArray, seed: bytes, mode: str, temperature: float) -> str:
    """Recompute a round's token from its published distribution (any order) and revealed seed."""
    draw = draw_function(mode)
    order = sorted(range(len(tokens)), key=tokens.__getitem__)
    canonical = [tokens[i] for i in order]
    return canonical[draw(canonical, probs[order], seed, temperature)]

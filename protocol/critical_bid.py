"""The critical bid: the lowest bid at which the drawn token would still have been drawn.

With the seed and everyone else's bids fixed, the winner at agent ``i``'s bid ``s`` is
``argmax_t (a_t + s c_t)``: an upper envelope of lines (docs/mechanism.md section 5 says how each
aggregation defines ``a`` and ``c``). As ``s`` falls from ``b_i``, the winner ``w`` first loses to
a token with a smaller slope where their lines cross; the highest such crossing is the critical bid.
The auctioneer computes it for every agent at once; an agent computes it for itself from the
published result to check its charge. Both use :func:`critical_bids`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
REFERENCE_SPONSOR = "@reference"
"""The name under which a result's ``sponsors`` lists the reference's share (no agent can have it)."""


def critical_bids(a: FloatArray, c: FloatArray, winner: int) -> FloatArray:
    """``z = max(0, max over t with c_t < c_w of (a_t - a_w) / (c_w - c_t))`` for every row of ``a``, ``c``
    (one row per agent, one column per token in canonical order); 0 when no line crosses below."""
    slope_w = c[:, winner : winner + 1]
    level_w = a[:, winner : winner + 1]
    flatter = c < slope_w
    with np.errstate(divide="ignore", invalid="ignore"):
        crossings = np.where(flatter, (a - level_w) / (slope_w - c), -np.inf)
    if crossings.shape[1] == 0:
        return np.zeros(len(a))
    return np.maximum(crossings.max(axis=1), 0.0)

"""Codec benchmark: sealed bids encoded and decoded per second, by support size."""

from __future__ import annotations

from functools import partial

import numpy as np

from benchmarks.timing import Figure, best_time
from protocol import Distribution, decode, encode
from protocol.messages import SealedBid


def sealed_bid(support: int) -> SealedBid:
    probs = np.random.default_rng(support).dirichlet(np.ones(support))
    probs /= probs.sum()
    distribution = Distribution.model_validate({"tokens": [f" tok{i}" for i in range(support)], "probs": probs})
    return SealedBid(round=1, distribution=distribution, bid=1.5)


def run(quick: bool = False) -> list[Figure]:
    figures = []
    for support in (2, 64, 1024):
        message = sealed_bid(support)
        data = encode(message)
        encode_s = best_time(partial(encode, message))
        decode_s = best_time(partial(decode, data))
        figures.append(
            Figure("codec", f"codec_encode_per_s_k{support}", f"encode sealed bid, K={support}", 1 / encode_s, "/s")
        )
        figures.append(
            Figure(
                "codec",
                f"codec_decode_per_s_k{support}",
                f"decode + validate sealed bid, K={support}",
                1 / decode_s,
                "/s",
            )
        )
    return figures

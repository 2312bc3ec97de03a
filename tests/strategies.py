"""Hypothesis strategies for random auction instances."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

TOKENS = ["a", "b", " Large", "Generative", " the", "é", "日本", "\U0001f600", "Z", " z"]


@dataclass
class Instance:
    dists: list[dict[str, float]]
    bids: list[float]
    reference: dict[str, float] | None
    reference_weight: float

    @property
    def rows(self) -> list[dict[str, float]]:
        return self.dists + ([self.reference] if self.reference is not None else [])

    @property
    def row_bids(self) -> list[float]:
        return self.bids + ([self.reference_weight] if self.reference is not None else [])


@st.composite
def distributions(draw: st.DrawFn) -> dict[str, float]:
    support = draw(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=5, unique=True))
    raw = draw(st.lists(st.floats(0.05, 1.0), min_size=len(support), max_size=len(support)))
    total = sum(raw)
    return {t: w / total for t, w in zip(support, raw, strict=True)}


bid_values = st.one_of(st.just(0.0), st.floats(0.01, 10.0))


@st.composite
def instances(draw: st.DrawFn, max_agents: int = 5, with_reference: bool = True) -> Instance:
    n = draw(st.integers(1, max_agents))
    dists = [draw(distributions()) for _ in range(n)]
    bids = draw(st.lists(bid_values, min_size=n, max_size=n))
    reference = draw(st.none() | distributions()) if with_reference else None
    weight = draw(bid_values) if reference is not None else 0.0
    return Instance(dists, bids, reference, weight)

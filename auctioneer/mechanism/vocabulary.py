"""Sparse distributions and the canonical vocabulary they are laid out on.

Agents submit sparse distributions (only tokens they give positive mass). The mechanism works on
one dense ``n x |V|`` matrix whose columns are the union ``V`` of all supports in canonical order:
sorted by UTF-8 bytes. For valid Unicode strings that is exactly Python's code-point order, so a
plain sort of ``str`` objects is canonical and submission order never matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


class Sparse(Protocol):
    """Anything holding a sparse distribution as parallel ``tokens`` and ``probs`` (a bid's decoded
    distribution, a ledger row, a :class:`SparseDistribution`): the mechanism reads nothing else."""

    @property
    def tokens(self) -> Sequence[str]: ...

    @property
    def probs(self) -> FloatArray: ...


@dataclass(frozen=True)
class SparseDistribution:
    """A distribution given as parallel arrays: ``probs[k]`` is the probability of ``tokens[k]``."""

    tokens: Sequence[str]
    probs: FloatArray

    @classmethod
    def from_mapping(cls, mapping: dict[str, float]) -> SparseDistribution:
        return cls(tuple(mapping), np.fromiter(mapping.values(), dtype=np.float64, count=len(mapping)))

    def as_mapping(self) -> dict[str, float]:
        return dict(zip(self.tokens, self.probs.tolist(), strict=True))


def dense_matrix(distributions: Sequence[Sparse]) -> tuple[list[str], FloatArray]:
    """Lay sparse distributions out as rows of a dense matrix over their canonical union.

    Returns ``(vocab, P)`` with ``vocab`` sorted canonically and ``P[i, j]`` the probability that
    distribution ``i`` gives ``vocab[j]``. Tokens within one distribution must be distinct.
    The union is a set of the token strings (hashing is the one unavoidable per-token step);
    everything after it is array work.
    """
    vocab = sorted(set().union(*(d.tokens for d in distributions)))
    column_of = {token: column for column, token in enumerate(vocab)}
    rows, width = len(distributions), len(vocab)
    all_tokens = list(chain.from_iterable(d.tokens for d in distributions))
    matrix = np.zeros(rows * width, dtype=np.float64)
    if all_tokens:
        # One itemgetter looks every token up in C; it returns a bare item, not a tuple, for one token.
        cells = np.array(itemgetter(*all_tokens)(column_of), dtype=np.intp, ndmin=1)
        # Row i's cells start at i * width (the ndarray methods skip numpy's Python-level wrappers,
        # which cost more than the work itself at a few agents and tokens).
        cells += np.arange(0, rows * width, width).repeat([len(d.tokens) for d in distributions])
        matrix[cells] = np.concatenate([d.probs for d in distributions])
    return vocab, matrix.reshape(rows, width)

"""The bridge from a next-token model to an :class:`Agent`, and the shaping every adapter shares."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Protocol

from agent_client.agent import Agent, Bid, RoundContext


class NextTokenModel(Protocol):
    def next_token_distribution(self, text: str) -> dict[str, float]:
        """Probabilities of the next token (decoded strings, leading spaces kept) after ``text``."""
        ...


def shape_distribution(
    logprobs: Mapping[str, float] | Iterable[tuple[str, float]],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> dict[str, float]:
    """Temperature, then top-k, then nucleus (top-p) on log-probabilities; renormalised.

    ``logprobs`` maps decoded token strings to log-probabilities (or is a list of such pairs, when
    several token ids decode to the same string: those are merged, their weights add up). Empty
    strings (special tokens) are dropped.
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    pairs = list(logprobs.items() if isinstance(logprobs, Mapping) else logprobs)
    merged: dict[str, float] = {}
    top = max(logprob for _, logprob in pairs)
    for token, logprob in pairs:
        if token and math.isfinite(logprob):
            merged[token] = merged.get(token, 0.0) + math.exp((logprob - top) / temperature)
    ranked = sorted(merged.items(), key=lambda kv: -kv[1])[: top_k or None]
    total = sum(p for _, p in ranked)
    kept, mass = [], 0.0
    for token, weight in ranked:
        kept.append((token, weight / total))
        mass += weight / total
        if top_p is not None and mass >= top_p:
            break
    norm = sum(p for _, p in kept)
    return {token: p / norm for token, p in kept}


class LLMAgent(Agent):
    """Bids ``bid`` for its model's next-token distribution, optionally steered by an instruction.

    ``instruction`` (an advertiser's brief, a persona) frames the shared text before the model is
    asked: as the model frames it (a chat model's system message, ``frame(instruction)``), else
    prepended to the text. Only the model's distribution is submitted, never the instruction.
    """

    def __init__(self, model: NextTokenModel, bid: float = 1.0, instruction: str = "") -> None:
        self.model = model
        self.bid = float(bid)
        self.instruction = instruction
        frame = getattr(model, "frame", None)
        self.prefix: str = frame(instruction) if callable(frame) else instruction

    def decide(self, context: RoundContext) -> Bid | None:
        distribution = self.model.next_token_distribution(self.prefix + context.text)
        return Bid(distribution, self.bid) if distribution else None

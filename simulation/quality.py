"""Text quality measured by the reader's language model (the reference model).

What the ads cost the reader, as the token-auction papers measure it:

- **NLL per token** of the market's text under the reference model, each chosen token scored
  after the text before it (nats; lower is more natural to the reader), and its **perplexity**,
  ``exp(NLL)``;
- **mean total variation** between each round's aggregate distribution and the reference model's
  distribution after the same text (0: the market proposed what the reader's model would have);
- the same figures for the **ad-free baseline**: the reference model's own continuation of the
  prompt, as many tokens long, drawn from its distribution with a fixed seed (its TV is 0 by
  definition: its aggregate is the reference itself).

Tokens are scored as the market chose them (decoded strings): a token the model cannot produce
(a scripted agent's word) is scored at probability :data:`FLOOR` and counted in ``unscorable``.
Without a model nothing is measured, and the result says so (:func:`not_measured`), never 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from simulation.scenario import QualitySpec

log = logging.getLogger(__name__)

FLOOR = 1e-12  # the probability a token outside the model's vocabulary is scored at


class ReaderModel(Protocol):
    def next_token_distribution(self, text: str) -> dict[str, float]: ...


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    return 0.5 * sum(abs(p.get(t, 0.0) - q.get(t, 0.0)) for t in set(p) | set(q))


@dataclass(frozen=True)
class TextQuality:
    """One text's figures under the reference model."""

    tokens: int
    mean_nll: float
    perplexity: float
    mean_tv: float | None  # None where no aggregate was given (a text, not a market)
    unscorable: int

    def document(self) -> dict[str, Any]:
        return {"measured": True, **asdict(self)}


def measure_text(
    model: ReaderModel,
    frame: str,
    prompt: str,
    tokens: Sequence[str],
    aggregates: Sequence[Mapping[str, float] | None] | None = None,
) -> TextQuality:
    """Score ``tokens`` continuing ``prompt`` (the model sees ``frame + text``); with ``aggregates``
    (one per token, the market's distribution that token was drawn from), their mean TV too."""
    text, nll, unscorable, tvs = prompt, 0.0, 0, []
    for index, token in enumerate(tokens):
        reader = model.next_token_distribution(frame + text)
        probability = reader.get(token, 0.0)
        if probability <= 0.0:
            unscorable += 1
        nll -= math.log(max(probability, FLOOR))
        aggregate = aggregates[index] if aggregates is not None else None
        if aggregate is not None:
            tvs.append(total_variation(aggregate, reader))
        text += token
    mean = nll / len(tokens) if tokens else float("nan")
    return TextQuality(
        tokens=len(tokens),
        mean_nll=mean,
        perplexity=math.exp(mean) if tokens else float("nan"),
        mean_tv=float(np.mean(tvs)) if tvs else None,
        unscorable=unscorable,
    )


def reference_continuation(model: ReaderModel, frame: str, prompt: str, length: int, seed: int = 0) -> list[str]:
    """The reference model's own continuation of ``prompt``: ``length`` tokens drawn from its
    distribution (as its agent proposes it) with ``seed``."""
    rng = np.random.default_rng(seed)
    text, tokens = prompt, []
    for _ in range(length):
        distribution = model.next_token_distribution(frame + text)
        if not distribution:
            break
        names = list(distribution)
        weights = np.array([distribution[t] for t in names])
        token = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        tokens.append(token)
        text += token
    return tokens


def not_measured(why: str) -> dict[str, Any]:
    """What an evaluator without a model reports: nothing measured, and why."""
    return {"measured": False, "why": why}


def quality_report(
    scorer: ReaderModel,
    proposer: ReaderModel,
    frame: str,
    prompt: str,
    rounds: Iterable[tuple[str, Mapping[str, float] | None]],
    seed: int = 0,
) -> dict[str, Any]:
    """The market's text against the ad-free baseline: ``rounds`` are the market's (token, aggregate)
    pairs; ``proposer`` writes the baseline as the reference agent would (its shaping), ``scorer``
    scores both (the full distribution, so every token the model can write has a probability)."""
    chosen = list(rounds)
    tokens = [token for token, _ in chosen]
    market = measure_text(scorer, frame, prompt, tokens, [aggregate for _, aggregate in chosen])
    baseline_tokens = reference_continuation(proposer, frame, prompt, len(tokens), seed)
    baseline = measure_text(scorer, frame, prompt, baseline_tokens)
    log.info("quality: market NLL %.3f against the baseline's %.3f", market.mean_nll, baseline.mean_nll)
    return {
        "measured": True,
        "market": market.document(),
        "baseline": {**baseline.document(), "mean_tv": 0.0, "text": prompt + "".join(baseline_tokens)},
        "nll_increase": market.mean_nll - baseline.mean_nll,
    }


def market_quality(document: Mapping[str, Any], spec: QualitySpec | None) -> dict[str, Any]:
    """The quality report of one market's record (``Store.document``) under the scenario's reader
    model; :func:`not_measured` without one."""
    if spec is None:
        return not_measured("the scenario names no [quality] model")
    from agent_client.llm.hf import TransformersModel

    proposer = TransformersModel(spec.model, top_k=spec.top_k)
    scorer = proposer.fork(top_k=None)
    rounds = [(r["token"], r["distribution"]) for r in document["rounds"] if r["token"] is not None]
    return quality_report(scorer, proposer, proposer.frame(spec.instruction), document["prompt"], rounds, spec.seed)

"""Built-in agents: a static one (fixed distribution and bid) and a phrase agent.

The phrase agent wants the text to continue with its own phrase: each round it proposes the next
word of the phrase it has not yet seen written (in order, anywhere after the prompt), with a
configurable confidence; the rest of the mass goes to an alternative phrase's next word, or to the
word after next. A market of phrase agents writes readable text that blends their phrases by bid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from agent_client.agent import Agent, Bid, RoundContext

WORD = re.compile(r"\s*[\w'-]+|\s*[^\w\s]")


class StaticAgent(Agent):
    """Bids the same distribution and amount every round."""

    blocking = False

    def __init__(self, distribution: Mapping[str, float], bid: float) -> None:
        self.bid = Bid(dict(distribution), float(bid))

    def decide(self, context: RoundContext) -> Bid:
        return self.bid


def split_words(phrase: str) -> list[str]:
    """``" Large Language Models."`` -> ``[" Large", " Language", " Models", "."]`` (tokens keep their spacing)."""
    return WORD.findall(phrase)


def progress(words: Sequence[str], tokens: Sequence[str]) -> int:
    """How many of ``words`` appear, in order, as a subsequence of ``tokens``."""
    done = 0
    for token in tokens:
        if done < len(words) and token == words[done]:
            done += 1
    return done


class PhraseAgent(Agent):
    """Pulls the text towards its ``phrase``, one word per round; done once the phrase is written."""

    blocking = False

    def __init__(self, phrase: str, bid: float, confidence: float = 1.0, alternative: str | None = None) -> None:
        if not 0 < confidence <= 1:
            raise ValueError(f"confidence must be in (0, 1], got {confidence}")
        self.words = split_words(phrase)
        if not self.words:
            raise ValueError("the phrase has no words")
        self.alternative = split_words(alternative) if alternative else []
        self.amount = float(bid)
        self.confidence = float(confidence)

    def decide(self, context: RoundContext) -> Bid | None:
        done = progress(self.words, context.tokens)
        if done == len(self.words):
            return None
        wanted = self.words[done]
        runner_up = self._runner_up(done, context.tokens)
        if runner_up is None or runner_up == wanted or self.confidence == 1.0:
            return Bid({wanted: 1.0}, self.amount)
        return Bid({wanted: self.confidence, runner_up: 1.0 - self.confidence}, self.amount)

    def _runner_up(self, done: int, tokens: Sequence[str]) -> str | None:
        if self.alternative:
            alt_done = progress(self.alternative, tokens)
            return self.alternative[alt_done] if alt_done < len(self.alternative) else None
        return self.words[done + 1] if done + 1 < len(self.words) else None

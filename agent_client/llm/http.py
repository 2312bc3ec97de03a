"""OpenAI-compatible completion servers that return log-probabilities (llama.cpp, vLLM, Ollama).

Asks ``POST {base_url}/completions`` for one token with ``logprobs = top_k`` and reads the top
log-probabilities of that token; ``temperature``/``top_k``/``top_p`` are applied locally by
:func:`shape_distribution`. Both the completions shape (``logprobs.top_logprobs[0]``: token ->
logprob) and the chat shape (``logprobs.content[0].top_logprobs``: list of {token, logprob}) are read.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from agent_client.llm.agent import LLMAgent, shape_distribution

log = logging.getLogger(__name__)


class LogprobsUnavailable(Exception):
    """The server answered without log-probabilities (it may not support them)."""


class OpenAICompatibleModel:
    """A remote model behind an OpenAI-compatible ``/completions`` endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        top_k: int = 20,
        temperature: float = 1.0,
        top_p: float | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/completions"
        self.model = model
        self.top_k = top_k
        self.temperature = temperature
        self.top_p = top_p
        self.api_key = api_key
        self.timeout = timeout

    def next_token_distribution(self, text: str) -> dict[str, float]:
        body = {"model": self.model, "prompt": text, "max_tokens": 1, "logprobs": self.top_k, "temperature": 0.0}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            reply = json.load(response)
        return shape_distribution(top_logprobs(reply), self.temperature, self.top_k, self.top_p)


def top_logprobs(reply: dict[str, Any]) -> dict[str, float]:
    """The first generated token's top log-probabilities from a completions or chat reply."""
    try:
        logprobs = reply["choices"][0]["logprobs"]
        if logprobs and "top_logprobs" in logprobs and logprobs["top_logprobs"]:
            return {str(t): float(lp) for t, lp in logprobs["top_logprobs"][0].items()}
        if logprobs and logprobs.get("content"):
            return {str(e["token"]): float(e["logprob"]) for e in logprobs["content"][0]["top_logprobs"]}
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise LogprobsUnavailable(f"unexpected reply shape: {exc}") from None
    raise LogprobsUnavailable("the server returned no logprobs (does it support them?)")


class OpenAICompatibleAgent(LLMAgent):
    """An LLM agent on an OpenAI-compatible server: ``--agent agent_client.llm.http:OpenAICompatibleAgent``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        bid: float = 1.0,
        instruction: str = "",
        top_k: int = 20,
        temperature: float = 1.0,
        top_p: float | None = None,
        api_key: str | None = None,
    ) -> None:
        super().__init__(OpenAICompatibleModel(base_url, model, top_k, temperature, top_p, api_key), bid, instruction)

    def decide(self, context: Any) -> Any:
        try:
            return super().decide(context)
        except (urllib.error.URLError, TimeoutError, LogprobsUnavailable) as exc:
            log.warning("round %d: no distribution from %s: %s", context.round, self.model.url, exc)  # type: ignore[attr-defined]
            return None

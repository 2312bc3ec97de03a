"""LLM-backed agents: a next-token model turned into a bidding agent.

``LLMAgent`` wraps any :class:`NextTokenModel` (text in, next-token distribution out). Adapters:
``agent_client.llm.http`` (OpenAI-compatible completion servers returning logprobs: llama.cpp
server, vLLM, Ollama) and ``agent_client.llm.hf`` (Hugging Face ``transformers`` causal LMs,
extra ``[llm]``).
"""

from agent_client.llm.agent import LLMAgent, NextTokenModel, shape_distribution

__all__ = ["LLMAgent", "NextTokenModel", "shape_distribution"]

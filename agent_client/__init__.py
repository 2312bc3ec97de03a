"""The agent side of token-auction: subclass :class:`Agent`, run it with :class:`AgentRuntime`."""

from agent_client.agent import Agent, Bid, FunctionAgent, RoundContext
from agent_client.builtin import PhraseAgent, StaticAgent
from agent_client.report import AgentReport
from agent_client.runtime import AgentRuntime

__all__ = [
    "Agent",
    "AgentReport",
    "AgentRuntime",
    "Bid",
    "FunctionAgent",
    "PhraseAgent",
    "RoundContext",
    "StaticAgent",
]

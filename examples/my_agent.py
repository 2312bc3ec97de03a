"""A custom agent in a few lines: bid for whatever token is currently winning, or a fallback.

Run it against a market with:

    agent-client --name leader --agent examples.my_agent:EchoTheLeader --param fallback=" Generative" --param bid=2
"""

from agent_client import Agent, Bid, RoundContext


class EchoTheLeader(Agent):
    """Backs the token the last round's aggregate liked best (bandwagon bidding)."""

    def __init__(self, fallback: str = " the", bid: float = 1.0) -> None:
        self.fallback = fallback
        self.bid = bid

    def decide(self, context: RoundContext) -> Bid:
        last = context.recent[-1] if context.recent else None
        if last is None or last.distribution is None:
            return Bid({self.fallback: 1.0}, self.bid)
        favourite = max(last.distribution.as_mapping().items(), key=lambda kv: kv[1])[0]
        return Bid({favourite: 0.5, self.fallback: 0.5} if favourite != self.fallback else {favourite: 1.0}, self.bid)

"""What an agent saw of the exchange: a record per round it took part in, per market (``as_dict``
for JSON, ``agent-client --report-json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class RoundRecord:
    """One round as this agent saw it."""

    round: int
    bid: float | None = None
    status: str = "no bid"
    token: str | None = None
    payment: float = 0.0


@dataclass
class MarketReport:
    """One market as this agent saw it."""

    market: str
    rounds: dict[int, RoundRecord] = field(default_factory=dict)
    text: str = ""
    closed_reason: str | None = None

    def record(self, number: int) -> RoundRecord:
        return self.rounds.setdefault(number, RoundRecord(number))


@dataclass
class AgentReport:
    """Everything one agent saw of the exchange (``as_dict`` for JSON)."""

    name: str
    markets: dict[str, MarketReport] = field(default_factory=dict)
    spent: float = 0.0
    verification_failures: int = 0
    resyncs: int = 0

    def market(self, market: str) -> MarketReport:
        return self.markets.setdefault(market, MarketReport(market))

    def only(self) -> MarketReport:
        """The report of the one market this agent took part in."""
        if len(self.markets) != 1:
            raise ValueError(f"{self.name} took part in {len(self.markets)} markets")
        return next(iter(self.markets.values()))

    @property
    def all_closed(self) -> bool:
        return bool(self.markets) and all(m.closed_reason is not None for m in self.markets.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "spent": self.spent,
            "verification_failures": self.verification_failures,
            "resyncs": self.resyncs,
            "markets": [
                {**asdict(report), "rounds": [asdict(report.rounds[n]) for n in sorted(report.rounds)]}
                for report in self.markets.values()
            ],
        }

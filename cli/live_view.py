"""A rich live view of a market for spectators: the growing text, each token coloured by the sponsor
who pulled it most, the last round, the payments (the feed folded by
:class:`~protocol.market_state.MarketState`)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from protocol.client import FeedEvent
from protocol.market_state import MarketState
from protocol.messages import MarketClosed, RoundOpen, RoundResult, SyncReply

BAR_WIDTH = 30
SPONSOR_COLOURS = ("cyan", "magenta", "yellow", "green", "blue", "red", "bright_cyan", "bright_magenta")
REFERENCE_SPONSOR = "@reference"


def top_sponsor(sponsors: dict[str, float]) -> str | None:
    """Who pulled a round's token most (its largest sponsor share), if anyone did."""
    return max(sponsors.items(), key=lambda kv: (kv[1], kv[0]))[0] if sponsors else None


class MarketView:
    """Folds feed events into what a spectator sees: the feed's one fold, a status line and every result."""

    def __init__(self, top: int = 6) -> None:
        self.top = top
        self.state = MarketState("")
        self.status = "connecting"
        self.history: list[RoundResult] = []
        self.colours: dict[str, str] = {}  # sponsor -> its colour, in order of first appearance

    def apply(self, event: FeedEvent) -> None:
        if not isinstance(event, SyncReply | RoundOpen | RoundResult | MarketClosed):
            return
        if not self.state.apply(event):
            return
        if isinstance(event, SyncReply):
            self.status = f"synced at round {event.last_round}"
        elif isinstance(event, RoundOpen):
            self.status = f"round {event.round} open ({event.timeout:g}s)"
        elif isinstance(event, RoundResult):
            self.history.append(event)
            sponsor = top_sponsor(event.sponsors)
            if sponsor is not None and sponsor != REFERENCE_SPONSOR and sponsor not in self.colours:
                self.colours[sponsor] = SPONSOR_COLOURS[len(self.colours) % len(SPONSOR_COLOURS)]
            self.status = f"round {event.round} decided"
        else:
            self.status = f"market closed ({event.reason}) after {event.rounds} rounds"

    def coloured_text(self) -> Text:
        """The text: the prompt dim, each token seen decided in its top sponsor's colour (the
        reader's own pull plain), the rest bold."""
        prompt, written = self.state.prompt, self.state.text
        text = Text(prompt, style="dim")
        rest = written[len(prompt) :] if written.startswith(prompt) else written
        seen = [(r.token, top_sponsor(r.sponsors)) for r in self.history if r.token]
        seen_text = "".join(token for token, _ in seen)
        if not seen or not rest.endswith(seen_text):
            return text.append(rest, style="bold")
        text.append(rest[: len(rest) - len(seen_text)], style="bold")
        for token, sponsor in seen:
            text.append(token, style=f"bold {self.colours[sponsor]}" if sponsor in self.colours else "bold")
        return text

    def legend(self) -> Text:
        legend = Text()
        for sponsor, colour in self.colours.items():
            legend.append(f"{sponsor} ", style=f"bold {colour}")
        return legend

    def render(self) -> RenderableType:
        text = self.coloured_text()
        subtitle = Text.assemble(self.status, "   ", self.legend()) if self.colours else self.status
        parts: list[RenderableType] = [Panel(text, title="text", subtitle=subtitle)]
        if self.state.last is not None:
            parts.append(self._round_table(self.state.last))
        if self.state.balances:
            parts.append(self._balances_table())
        return Group(*parts)

    def _round_table(self, result: RoundResult) -> Table:
        table = Table(title=f"round {result.round}: chose {result.token!r}", title_justify="left")
        table.add_column("token")
        table.add_column("q", justify="right")
        table.add_column("")
        if result.distribution is not None:
            ranked = sorted(result.distribution.as_mapping().items(), key=lambda kv: -kv[1])[: self.top]
            for token, prob in ranked:
                style = "bold green" if token == result.token else ""
                table.add_row(Text(repr(token), style=style), f"{prob:.3f}", "█" * round(prob * BAR_WIDTH))
        return table

    def _balances_table(self) -> Table:
        last, balances = self.state.last, self.state.balances
        table = Table(title="agents", title_justify="left")
        for column in ("agent", "bid", "paid this round", "total paid"):
            table.add_column(column, justify="right" if column != "agent" else "left")
        for agent in sorted(balances):
            bid = last.bids.get(agent) if last else None
            paid = last.payments.get(agent) if last else None
            table.add_row(
                agent,
                "-" if bid is None else f"{bid:.4g}",
                "-" if paid is None else f"{paid:.4g}",
                f"{balances[agent]:.4g}",
            )
        return table

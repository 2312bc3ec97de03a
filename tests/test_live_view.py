"""The spectators' live view: each token of the text in the colour of the sponsor who pulled it most."""

from __future__ import annotations

from cli.live_view import MarketView
from protocol.messages import RoundResult

SEED = "00" * 32


def result(number: int, text: str, token: str, sponsors: dict[str, float]) -> RoundResult:
    return RoundResult(seq=2 * number, round=number, token=token, text=text, distribution=None, bids={},
                       payments={}, balances={}, seed=SEED, seed_commitment=SEED, sponsors=sponsors)  # fmt: skip


def test_each_token_takes_its_top_sponsors_colour_and_the_readers_pull_stays_plain() -> None:
    view = MarketView()
    view.apply(result(1, "Go: fly", " fly", {"sky": 0.7, "harbor": 0.3}))
    view.apply(result(2, "Go: fly stay", " stay", {"sky": 0.2, "harbor": 0.8}))
    view.apply(result(3, "Go: fly stay now", " now", {"@reference": 0.9, "sky": 0.1}))
    view.apply(result(3, "Go: fly stay now", " now", {"@reference": 0.9, "sky": 0.1}))  # a replay: no news
    text = view.coloured_text()
    assert text.plain == "Go: fly stay now"
    styles = {text.plain[span.start : span.end]: str(span.style) for span in text.spans}
    assert styles == {"Go:": "bold", " fly": "bold cyan", " stay": "bold magenta", " now": "bold"}
    assert view.legend().plain == "sky harbor "


def test_a_text_its_results_do_not_spell_is_shown_uncoloured() -> None:
    view = MarketView()
    view.apply(result(4, "earlier words and more", " other", {"sky": 1.0}))  # (a text from before, say)
    assert [str(span.style) for span in view.coloured_text().spans] == ["bold"]

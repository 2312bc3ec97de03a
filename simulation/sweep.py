"""The revenue-quality frontier: one scenario run at several values of one numeric market setting.

``--sweep reference_weight=0,0.5,1,2,4`` runs the scenario at each value (``--repeat`` seeds at each)
and gathers, per value, the revenue and the text's quality under the reader's model
(:mod:`simulation.quality`): the platform's lever (how much weight the reader's model gets) against
what it earns. ``frontier.json`` holds every point with its spread; ``frontier.png`` draws revenue
against the NLL the ads added per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from protocol.errors import describe_validation_error
from simulation.scenario import Scenario, ScenarioError, ScenarioMarket

NOT_SWEPT = {"rounds", "max_tokens", "max_idle_rounds", "min_agents"}  # the scenario sets these itself


@dataclass(frozen=True)
class Sweep:
    """A market setting and the values to run it at."""

    setting: str
    values: list[float]

    def scenarios(self, scenario: Scenario) -> list[tuple[float, Scenario]]:
        """The scenario at each value (checked: a value the market cannot run is a ScenarioError)."""
        variants = []
        for value in self.values:
            data = {**scenario.market.model_dump(exclude={"payment_rules"}, exclude_unset=True), self.setting: value}
            try:
                market = ScenarioMarket.model_validate(data)
            except ValidationError as exc:
                raise ScenarioError(f"--sweep {self.setting}={value:g}: {describe_validation_error(exc)}") from None
            variants.append((value, scenario.model_copy(update={"market": market})))
        return variants


def parse_sweep(text: str) -> Sweep:
    """``"reference_weight=0,0.5,1"``: a numeric market setting and its values."""
    setting, _, listed = text.partition("=")
    setting = setting.strip().replace("-", "_")
    numeric = {
        name
        for name, field in ScenarioMarket.model_fields.items()
        if field.annotation in (int, float, int | None, float | None) and name not in NOT_SWEPT
    }
    if setting not in numeric:
        raise ScenarioError(f"--sweep takes a numeric market setting ({', '.join(sorted(numeric))}), not {setting!r}")
    try:
        values = [float(v) for v in listed.split(",") if v.strip()]
    except ValueError:
        raise ScenarioError(f"--sweep {setting}= takes numbers separated by commas, not {listed!r}") from None
    if len(values) < 2:
        raise ScenarioError(f"--sweep {setting} needs at least two values (NAME=V1,V2,...)")
    return Sweep(setting, values)


def spread(values: Sequence[float | None]) -> dict[str, float] | None:
    """Mean and standard deviation over runs; None when nothing was measured."""
    measured = [v for v in values if v is not None]
    if not measured:
        return None
    return {"mean": float(np.mean(measured)), "std": float(np.std(measured)), "runs": len(measured)}


def frontier_point(value: float, summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One value's figures over its runs."""

    def quality(key: str, part: str = "market") -> list[float | None]:
        return [s["quality"][part][key] if s["quality"]["measured"] else None for s in summaries]

    measured = [s["quality"] for s in summaries if s["quality"]["measured"]]
    return {
        "value": value,
        "revenue": spread([s["revenue"] for s in summaries]),
        "welfare": spread([s["welfare"] for s in summaries]),
        "nll": spread(quality("mean_nll")),
        "perplexity": spread(quality("perplexity")),
        "mean_tv": spread(quality("mean_tv")),
        "baseline_nll": spread(quality("mean_nll", "baseline")),
        "nll_increase": spread([q["nll_increase"] for q in measured]),
        "quality": "measured" if measured else summaries[0]["quality"]["why"],
    }


def frontier_document(sweep: Sweep, points: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "setting": sweep.setting,
        "points": points,
        "reading": "revenue per market run against the NLL per token the ads added under the reader's model",
    }


def plot_frontier(document: dict[str, Any], out: Path) -> Path:
    """``frontier.png``: revenue against the added NLL (or against the setting, without a quality model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = document["points"]
    measured = all(p["nll_increase"] is not None for p in points)
    xs = [p["nll_increase"]["mean"] if measured else p["value"] for p in points]
    x_errors = [p["nll_increase"]["std"] if measured else 0.0 for p in points]
    ys = [p["revenue"]["mean"] for p in points]
    y_errors = [p["revenue"]["std"] for p in points]
    figure, axes = plt.subplots(figsize=(6, 4.2))
    axes.errorbar(xs, ys, xerr=x_errors, yerr=y_errors, marker="o", capsize=3)
    for x, y, point in zip(xs, ys, points, strict=True):
        axes.annotate(f"{document['setting']}={point['value']:g}", (x, y), textcoords="offset points", xytext=(5, 5))
    axes.set_xlabel("NLL added by the ads (nats/token, reader's model)" if measured else document["setting"])
    axes.set_ylabel("revenue per market")
    axes.set_title("revenue against text quality" if measured else "revenue (no quality model: not measured)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = out / "frontier.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

"""What a simulated market did, from its ledger: ``summary.json`` figures and PNG plots.

Per agent: bids, payments, utility ``Σ value x (1 - TV(p_i, q)) - payment``, mean TV and
KL(p_i || q) between its distribution and the outcome, and its influence (allocation) per round.
Welfare is ``Σ_i Σ_rounds value_i x (1 - TV(p_i, q))``; revenue is the sum of payments.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from auctioneer.ledger import Ledger
from simulation.scenario import Scenario

KL_FLOOR = 1e-12


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    return 0.5 * sum(abs(p.get(t, 0.0) - q.get(t, 0.0)) for t in set(p) | set(q))


def kl_divergence(p: dict[str, float], q: dict[str, float]) -> float:
    return sum(pt * math.log(pt / max(q.get(t, 0.0), KL_FLOOR)) for t, pt in p.items() if pt > 0)


def summarize(db: Path, scenario: Scenario) -> dict[str, Any]:
    """The summary of one run, computed from its ledger."""
    with Ledger.open_existing(db) as ledger:
        document = ledger.document()
    rounds = document["rounds"]
    values = {a.name: a.value for a in scenario.agents}
    agents: dict[str, Any] = {}
    for name, value in values.items():
        bids: list[float | None] = []
        influence: list[float | None] = []
        payments: list[float] = []
        tvs: list[float] = []
        kls: list[float] = []
        utility = 0.0
        for r in rounds:
            entry = r["bids"].get(name)
            paid = r["payments"].get(name, 0.0)
            bids.append(entry["bid"] if entry else None)
            payments.append(paid)
            if entry is None:
                influence.append(None)
                continue
            tv = total_variation(entry["distribution"], r["distribution"])
            tvs.append(tv)
            kls.append(kl_divergence(entry["distribution"], r["distribution"]))
            influence.append(1.0 - tv)
            utility += value * (1.0 - tv) - paid
        agents[name] = {
            "value": value,
            "bids": bids,
            "payments": payments,
            "influence": influence,
            "total_paid": sum(payments),
            "mean_bid": float(np.mean([b for b in bids if b is not None])) if tvs else None,
            "utility": utility,
            "mean_tv": float(np.mean(tvs)) if tvs else None,
            "mean_kl": float(np.mean(kls)) if kls else None,
        }
    revenue_per_round = [sum(r["payments"].values()) for r in rounds]
    return {
        "text": document["text"],
        "rounds": len(rounds),
        "settings": document["settings"],
        "revenue": sum(revenue_per_round),
        "revenue_per_round": revenue_per_round,
        "welfare": sum(a["value"] * sum(x for x in a["influence"] if x is not None) for a in agents.values()),
        "agents": agents,
    }


def aggregate_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means and standard deviations of the headline figures over repeated runs."""

    def spread(values: list[float]) -> dict[str, float]:
        return {"mean": float(np.mean(values)), "std": float(np.std(values))}

    names = list(runs[0]["agents"])
    return {
        "runs": len(runs),
        "revenue": spread([r["revenue"] for r in runs]),
        "welfare": spread([r["welfare"] for r in runs]),
        "agents": {
            name: {
                key: spread([r["agents"][name][key] for r in runs if r["agents"][name][key] is not None])
                for key in ("total_paid", "utility", "mean_bid", "mean_tv", "mean_kl")
                if any(r["agents"][name][key] is not None for r in runs)
            }
            for name in names
        },
    }


def plot(summary: dict[str, Any], out: Path) -> list[Path]:
    """Four PNGs: revenue per round, cumulative payments, influence, bids over rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = np.arange(1, summary["rounds"] + 1)
    written = []

    def save(figure: Any, name: str, title: str, ylabel: str) -> None:
        axes = figure.axes[0]
        axes.set_title(title)
        axes.set_xlabel("round")
        axes.set_ylabel(ylabel)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
        figure.tight_layout()
        path = out / name
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)

    window = max(1, summary["rounds"] // 20)

    def rolling(values: list[float | None]) -> Any:
        series = np.array([np.nan if v is None else v for v in values], dtype=float)
        present = ~np.isnan(series)
        kernel = np.ones(window)
        sums = np.convolve(np.where(present, series, 0.0), kernel, mode="same")
        counts = np.convolve(present.astype(float), kernel, mode="same")
        return np.divide(sums, counts, out=np.full_like(sums, np.nan), where=counts > 0)

    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(rounds, summary["revenue_per_round"], color="tab:green", alpha=0.25 if window > 1 else 1.0)
    if window > 1:
        axes.plot(rounds, rolling(summary["revenue_per_round"]), color="tab:green", label=f"{window}-round mean")
    save(figure, "revenue.png", f"Revenue per round (total {summary['revenue']:.4g})", "payments")

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, agent in summary["agents"].items():
        axes.plot(rounds, np.cumsum(agent["payments"]), label=name)
    save(figure, "payments.png", "Cumulative payments per agent", "total paid")

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, agent in summary["agents"].items():
        axes.plot(rounds, rolling(agent["influence"]), label=name)
    save(figure, "influence.png", f"Influence on the outcome, 1 - TV(p_i, q) ({window}-round mean)", "allocation")

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, agent in summary["agents"].items():
        raw = np.array([np.nan if b is None else b for b in agent["bids"]], dtype=float)
        line = axes.plot(rounds, rolling(agent["bids"]), label=f"{name} (value {agent['value']:g})", linewidth=2)[0]
        if window > 1:
            axes.plot(rounds, raw, color=line.get_color(), alpha=0.08, linewidth=0.5)
        axes.axhline(agent["value"], color=line.get_color(), linestyle=":", alpha=0.8)
    title = f"Bids ({window}-round mean; dotted: value)" if window > 1 else "Bids over rounds (dotted: value)"
    save(figure, "bids.png", title, "bid")
    return written

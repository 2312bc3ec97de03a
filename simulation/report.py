"""What a simulated market did, from its ledger: ``summary.json`` figures and PNG plots.

Per agent: bids, payments, the expected utility ``Σ value x (1 - TV(p_i, q)) - payment`` and the
realised utility ``Σ value x p_i(w) - payment`` (``w`` the token written: what an ex-post rule such
as ``critical_bid`` charges for), mean TV and KL(p_i || q) between its distribution and the
outcome, and its influence (allocation) per round. Welfare is ``Σ_i Σ_rounds value_i x (1 - TV(p_i,
q))``, realised welfare ``Σ_i Σ_rounds value_i x p_i(w)``; revenue is the sum of payments. With
several payment rules, :func:`plot_comparison` draws them side by side.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from auctioneer.ledger import Ledger
from simulation.quality import market_quality, total_variation
from simulation.scenario import Scenario

KL_FLOOR = 1e-12
SETTLED_SHARE = 0.4  # "learned" bids: the mean over this last share of the rounds


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
        utility = realised_value = 0.0
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
            realised_value += value * entry["distribution"].get(r["token"], 0.0)
        agents[name] = {
            "value": value,
            "bids": bids,
            "payments": payments,
            "influence": influence,
            "total_paid": sum(payments),
            "mean_bid": float(np.mean([b for b in bids if b is not None])) if tvs else None,
            "settled_bid": settled_mean(bids),
            "utility": utility,
            "realised_value": realised_value,
            "realised_utility": realised_value - sum(payments),
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
        "realised_welfare": sum(a["realised_value"] for a in agents.values()),
        "agents": agents,
        "quality": market_quality(document, scenario.quality),
    }


AGGREGATED = ("total_paid", "utility", "realised_utility", "mean_bid", "settled_bid", "mean_tv", "mean_kl")


def settled_mean(bids: list[float | None]) -> float | None:
    """The mean bid over the last ``SETTLED_SHARE`` of the rounds (where learners have settled)."""
    tail = [b for b in bids[int(len(bids) * (1 - SETTLED_SHARE)) :] if b is not None]
    return float(np.mean(tail)) if tail else None


def aggregate_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means and standard deviations of the headline figures over repeated runs."""

    def spread(values: list[float]) -> dict[str, float]:
        return {"mean": float(np.mean(values)), "std": float(np.std(values))}

    names = list(runs[0]["agents"])
    return {
        "runs": len(runs),
        "revenue": spread([r["revenue"] for r in runs]),
        "welfare": spread([r["welfare"] for r in runs]),
        "realised_welfare": spread([r["realised_welfare"] for r in runs]),
        "agents": {
            name: {
                "value": runs[0]["agents"][name]["value"],
                **{
                    key: spread([r["agents"][name][key] for r in runs if r["agents"][name][key] is not None])
                    for key in AGGREGATED
                    if any(r["agents"][name][key] is not None for r in runs)
                },
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


def headline(value: Any) -> float:
    """A figure of one run, or the mean of a figure over repeated runs."""
    return float(value["mean"]) if isinstance(value, dict) else float(value)


def learned_bid_ratio(agent: dict[str, Any]) -> float | None:
    """The settled bid over the agent's value."""
    settled = agent.get("settled_bid")
    if settled is None or not agent["value"]:
        return None
    return headline(settled) / float(agent["value"])


def plot_comparison(by_rule: dict[str, dict[str, Any]], out: Path) -> Path:
    """``comparison.png``: revenue and welfare per payment rule, and each agent's learned bid over value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = list(by_rule)
    names = list(next(iter(by_rule.values()))["agents"])
    figure, (money, bids) = plt.subplots(1, 2, figsize=(11, 4.6))
    width = 0.8 / 3
    positions = np.arange(len(rules))
    for k, (key, label) in enumerate(
        [("revenue", "revenue"), ("welfare", "welfare (expected)"), ("realised_welfare", "welfare (realised)")]
    ):
        money.bar(positions + (k - 1) * width, [headline(by_rule[r][key]) for r in rules], width, label=label)
    money.set_xticks(positions, rules)
    money.set_title("Revenue and welfare")
    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        ratios = [learned_bid_ratio(by_rule[r]["agents"][name]) or 0.0 for r in rules]
        value = by_rule[rules[0]]["agents"][name]["value"]
        bids.bar(positions + (k - (len(names) - 1) / 2) * width, ratios, width, label=f"{name} (value {value:g})")
    bids.axhline(1.0, color="black", linestyle=":", linewidth=1)
    bids.set_xticks(positions, rules)
    bids.set_title(f"Learned bid / value (last {SETTLED_SHARE:.0%} of rounds)")
    for axes in (money, bids):
        axes.grid(alpha=0.3, axis="y")
        axes.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    figure.tight_layout()
    path = out / "comparison.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def summarize_exchange(db: Path, scenario: Scenario) -> dict[str, Any]:
    """An exchange run, from its ledger: revenue over time, each agent's spend against its budget,
    round latency (from a round opening to its committed result), and every market's text.
    Times are seconds since the first market opened."""
    with Ledger.open_existing(db) as ledger:
        markets = ledger.markets()
        rounds = sorted(
            (record for market in markets for record in ledger.rounds(market.id)), key=lambda r: r.committed_at
        )
        commits = ledger.commits()
    start = min(market.opened_at for market in markets)
    budgets = {a.name: a.budget for a in scenario.agents}
    spend: dict[str, list[tuple[float, float]]] = {name: [(0.0, 0.0)] for name in budgets}
    revenue: list[tuple[float, float]] = [(0.0, 0.0)]
    for record in rounds:
        at = record.committed_at - start
        paid = sum(record.payments.values())
        if paid:
            revenue.append((at, revenue[-1][1] + paid))
        for agent, amount in record.payments.items():
            if amount and agent in spend:
                spend[agent].append((at, spend[agent][-1][1] + amount))
    latencies = [record.committed_at - record.opened_at for record in rounds]
    return {
        "markets": len(markets),
        "rounds": len(rounds),
        "fsyncs_per_round": commits / len(rounds) if rounds else None,
        "duration": max((r.committed_at for r in rounds), default=start) - start,
        "revenue": revenue[-1][1],
        "revenue_over_time": revenue,
        "latencies": latencies,
        "latency_p50": float(np.percentile(latencies, 50)) if latencies else None,
        "latency_p99": float(np.percentile(latencies, 99)) if latencies else None,
        "agents": {
            name: {"budget": budgets[name], "spent": points[-1][1], "spend_over_time": points}
            for name, points in spend.items()
        },
        "texts": {
            market.id: market.definition["settings"].get("prompt", "") + "".join(market.tokens) for market in markets
        },
    }


def plot_exchange(summary: dict[str, Any], out: Path) -> list[Path]:
    """``exchange-revenue.png`` (cumulative revenue over time), ``exchange-spend.png`` (each agent's
    cumulative spend against its budget) and ``exchange-latency.png`` (round latency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(figure: Any, name: str) -> None:
        figure.tight_layout()
        figure.savefig(out / name, dpi=110)
        plt.close(figure)
        written.append(out / name)

    figure, axes = plt.subplots(figsize=(7, 4))
    times, totals = zip(*summary["revenue_over_time"], strict=True)
    axes.step(times, totals, where="post", color="tab:green")
    axes.set(title=f"Revenue over time ({summary['markets']} markets)", xlabel="seconds", ylabel="revenue")
    axes.grid(alpha=0.3)
    save(figure, "exchange-revenue.png")

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, agent in summary["agents"].items():
        times, spent = zip(*agent["spend_over_time"], strict=True)
        line = axes.step(times, spent, where="post", label=name)[0]
        if agent["budget"] is not None:
            axes.axhline(agent["budget"], color=line.get_color(), linestyle=":", alpha=0.8)
    axes.set(title="Spend across markets (dotted: budget)", xlabel="seconds", ylabel="spent")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    save(figure, "exchange-spend.png")

    figure, axes = plt.subplots(figsize=(7, 4))
    p50, p99 = summary["latency_p50"], summary["latency_p99"]
    axes.set(
        title=f"Round latency, open to committed result (p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms)",
        xlabel="seconds",
        ylabel="rounds",
    )
    axes.hist(summary["latencies"], bins=30, color="tab:blue")
    axes.grid(alpha=0.3)
    save(figure, "exchange-latency.png")
    return written

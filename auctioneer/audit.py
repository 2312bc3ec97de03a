"""``auctioneer audit``: replay every stored round through the mechanism and check the record.

Per round: round numbers are contiguous, ``sha256(seed)`` equals the commitment, the replayed
token, aggregate and payments equal the stored ones (and the stored broadcast agrees with the
rows), and the balances broadcast equal the running sum of payments.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from auctioneer.ledger import Ledger, StoredRound
from auctioneer.ledger_cli import open_existing
from auctioneer.mechanism import SparseDistribution, run_auction, seed_commitment
from auctioneer.settings import MarketSettings

console = Console()
TOLERANCE = 1e-9


@dataclass(frozen=True)
class RoundVerdict:
    round: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))


def check_round(
    stored: StoredRound, settings: MarketSettings, expected_number: int, balances: dict[str, float]
) -> list[str]:
    """Everything wrong with one stored round (updates ``balances`` with its payments)."""
    problems = []
    result = stored.result
    if stored.round != expected_number:
        problems.append(f"expected round {expected_number}, found {stored.round}")
    if seed_commitment(stored.seed) != stored.seed_commitment:
        problems.append("sha256(seed) does not match the seed commitment")
    if result.seed != stored.seed.hex() or result.seed_commitment != stored.seed_commitment:
        problems.append("the broadcast seed differs from the stored one")
    if stored.bids:
        outcome = run_auction(
            [SparseDistribution(b.tokens, b.probs) for b in stored.bids],
            [b.bid for b in stored.bids],
            settings.mechanism(),
            stored.seed,
            settings.reference_distribution(),
        )
        if outcome.token != stored.token:
            problems.append(f"token {stored.token!r} but the mechanism chooses {outcome.token!r}")
        if (
            result.distribution is None
            or result.distribution.tokens != outcome.vocab
            or not np.allclose(result.distribution.probs, outcome.distribution, rtol=0, atol=TOLERANCE)
        ):
            problems.append("the broadcast aggregate differs from the replayed one")
        replayed = dict(zip([b.agent for b in stored.bids], outcome.payments.tolist(), strict=True))
        for agent, amount in replayed.items():
            charged = stored.payments.get(agent)
            if charged is None or not _close(charged, amount):
                problems.append(f"{agent} was charged {charged} but the mechanism says {amount:.12g}")
        if set(stored.payments) - set(replayed):
            problems.append(f"payments for agents without bids: {sorted(set(stored.payments) - set(replayed))}")
    elif stored.token is not None or stored.payments:
        problems.append("a round without bids has a token or payments")
    if (
        result.token != stored.token
        or set(result.payments) != set(stored.payments)
        or not all(_close(result.payments[a], stored.payments[a]) for a in stored.payments)
    ):
        problems.append("the broadcast result differs from the ledger rows")
    for agent, amount in stored.payments.items():
        balances[agent] = balances.get(agent, 0.0) + amount
    for agent, total in balances.items():
        if not _close(result.balances.get(agent, 0.0), total):
            problems.append(f"balance of {agent} broadcast as {result.balances.get(agent)} but payments sum to {total}")
    return problems


def audit_ledger(ledger: Ledger) -> list[RoundVerdict]:
    """A verdict for every stored round, in order."""
    settings = MarketSettings.model_validate(ledger.definition() or {})
    balances: dict[str, float] = {}
    return [
        RoundVerdict(stored.round, check_round(stored, settings, number, balances))
        for number, stored in enumerate(ledger.rounds(), start=1)
    ]


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("audit", help="replay and verify every stored round", description=__doc__)
    parser.add_argument("--db", type=Path, default=Path("market.db"), help="the market's SQLite ledger")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_existing(args.db) as ledger:
        verdicts = audit_ledger(ledger)
    for verdict in verdicts:
        if verdict.ok:
            console.print(f"round {verdict.round}: [green]ok[/green]", highlight=False)
        else:
            console.print(f"round {verdict.round}: [red]MISMATCH[/red] {'; '.join(verdict.problems)}", highlight=False)
    failed = [v for v in verdicts if not v.ok]
    if failed:
        console.print(
            f"[bold red]audit failed[/bold red]: first mismatch in round {failed[0].round} "
            f"({len(failed)} of {len(verdicts)} rounds)"
        )
        return 1
    console.print(f"[bold green]audit passed[/bold green]: {len(verdicts)} rounds verified")
    return 0

"""Auditing an exchange's ledger: replay every stored round through the mechanism, check every budget
(what each agent paid, and what it paid beside what is held or reserved of its budget, never above it).

Per round of every market: round numbers are contiguous, ``sha256(seed)`` equals the commitment,
the replayed token, aggregate, payments and sponsors equal the stored ones (a live reference's
distribution is replayed from its row), the stored broadcast agrees with the rows, and every
balance broadcast (each bidder's, at least) equals the running sum of that agent's payments in the
market. Per agent: what it paid across the exchange never exceeds its budget. Rounds are read one at
a time, so a ledger of any size can be audited.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from auctioneer.ledger import Store, StoredBid, StoredMarket, StoredRound
from auctioneer.mechanism import AuctionOutcome, Reference, run_auction
from auctioneer.settings import MarketSettings
from protocol.draw import seed_commitment

TOLERANCE = 1e-9


@dataclass(frozen=True)
class RoundVerdict:
    market: str
    round: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))


def _same_shares(a: dict[str, float], b: dict[str, float]) -> bool:
    return set(a) == set(b) and all(_close(a[k], b[k]) for k in a)


def bidders(stored: StoredRound) -> list[StoredBid]:
    """A stored round's sealed bids, its reference agent's left out."""
    return [b for b in stored.bids if not b.reference]


def rerun(stored: StoredRound, settings: MarketSettings, reference_weight: float | None = None) -> AuctionOutcome:
    """A stored round's sealed bids through the mechanism of ``settings``, with the round's own seed.
    The reference is the reference agent's recorded distribution if it bid (weighed as recorded, or
    by ``reference_weight``), else the market's fixed one."""
    bids = bidders(stored)
    live_reference = next((b for b in stored.bids if b.reference), None)
    reference = settings.reference_distribution()
    if live_reference is not None:
        weight = live_reference.bid if reference_weight is None else reference_weight
        reference = Reference(live_reference, weight)
    return run_auction(bids, [b.bid for b in bids], settings, stored.seed, reference)


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
    bids = bidders(stored)
    if bids or stored.token is not None:  # a round whose zero bids were left out: the reference alone decided
        outcome = rerun(stored, settings)
        if outcome.token != stored.token:
            problems.append(f"token {stored.token!r} but the mechanism chooses {outcome.token!r}")
        if (
            result.distribution is None
            or result.distribution.tokens != outcome.vocab
            or not np.allclose(result.distribution.probs, outcome.distribution, rtol=0, atol=TOLERANCE)
        ):
            problems.append("the broadcast aggregate differs from the replayed one")
        replayed = dict(zip([b.agent for b in bids], outcome.payments.tolist(), strict=True))
        for agent, amount in replayed.items():
            charged = stored.payments.get(agent)
            if charged is None or not _close(charged, amount):
                problems.append(f"{agent} was charged {charged} but the mechanism says {amount:.12g}")
        if set(stored.payments) - set(replayed):
            problems.append(f"payments for agents without bids: {sorted(set(stored.payments) - set(replayed))}")
        sponsors = outcome.sponsors_by_name([b.agent for b in bids])
        if not _same_shares(sponsors, stored.sponsors) or not _same_shares(sponsors, result.sponsors):
            problems.append(f"sponsors {stored.sponsors} but the mechanism says {sponsors}")
    elif stored.token is not None or stored.payments or stored.sponsors:
        problems.append("a round without bids has a token, payments or sponsors")
    if (
        result.token != stored.token
        or set(result.payments) != set(stored.payments)
        or not all(_close(result.payments[a], stored.payments[a]) for a in stored.payments)
    ):
        problems.append("the broadcast result differs from the ledger rows")
    for agent, amount in stored.payments.items():
        balances[agent] = balances.get(agent, 0.0) + amount
    missing = sorted(set(stored.payments) - set(result.balances))
    if missing:
        problems.append(f"the result lists no balance for its bidders {missing}")
    for agent, broadcast in result.balances.items():
        if not _close(broadcast, balances.get(agent, 0.0)):
            problems.append(
                f"balance of {agent} broadcast as {broadcast} but payments sum to {balances.get(agent, 0.0)}"
            )
    return problems


def audit_market(ledger: Store, market: StoredMarket) -> Iterator[RoundVerdict]:
    """A verdict for every stored round of one market, in order, each as its round is replayed."""
    settings = MarketSettings.model_validate(market.definition["settings"])
    balances: dict[str, float] = {}
    for number, stored in enumerate(ledger.rounds(market.id), start=1):
        yield RoundVerdict(market.id, stored.round, check_round(stored, settings, number, balances))


def round_verdicts(ledger: Store) -> Iterator[RoundVerdict]:
    """A verdict for every round of every market, each as its round is replayed (nothing is kept)."""
    for market in ledger.markets():
        yield from audit_market(ledger, market)


def budget_problems(ledger: Store) -> list[str]:
    """Every agent whose payments across the exchange exceed its budget, or whose account does not
    record what its payments add up to."""
    spent, accounts = ledger.spent(), ledger.accounts()
    problems = [
        f"{agent} paid {spent.get(agent, 0.0):.12g}, over its budget {account.budget}"
        for agent, account in accounts.items()
        if account.budget is not None and spent.get(agent, 0.0) > account.budget * (1 + TOLERANCE)
    ]
    problems += [
        f"{agent} spent {account.spent:.12g} and has {account.reserved:.12g} held or reserved: over its budget "
        f"{account.budget}"
        for agent, account in accounts.items()
        if account.budget is not None
        and account.spent + account.reserved > account.budget * (1 + TOLERANCE) + TOLERANCE
    ]
    for agent in sorted(set(spent) | set(accounts)):
        paid, recorded = spent.get(agent, 0.0), accounts[agent].spent if agent in accounts else 0.0
        if not _close(paid, recorded):
            problems.append(f"{agent}'s account records {recorded:.12g} spent, its payments add up to {paid:.12g}")
    return problems


def audit_ledger(ledger: Store) -> tuple[list[RoundVerdict], list[str]]:
    """A verdict for every round of every market, and the budget problems of the exchange."""
    return list(round_verdicts(ledger)), budget_problems(ledger)

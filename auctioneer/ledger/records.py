"""What a ledger holds, as values every store reads and writes: rounds to commit and the group commit
that writes them, rounds and markets as stored, budget accounts, and :class:`LedgerError`. No
storage here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from protocol.errors import UserError
from protocol.messages import MarketClosed, RoundResult


class LedgerError(UserError):
    """The store cannot be used as this exchange's ledger (the message says why, in one line)."""


class FencedOut(Exception):
    """A commit named markets this shard no longer owns (another shard took their leases): nothing
    was written; the markets must be let go, and the commit retried without them."""

    def __init__(self, markets: set[str]) -> None:
        super().__init__(f"markets no longer this shard's: {', '.join(sorted(markets))}")
        self.markets = markets


class AccountState(NamedTuple):
    """An agent's budget account as a commit leaves it: budget (None: unlimited), what its bids in
    open rounds reserve, what it has paid."""

    budget: float | None
    reserved: float
    spent: float


def account_row(account: AccountState) -> dict[str, float | None]:
    """An agent's budget account: budget, spent, reserved (as of the last commit) and what remains."""
    budget, reserved, spent = account
    remaining = None if budget is None else budget - spent - reserved
    return {"budget": budget, "spent": spent, "reserved": reserved, "remaining": remaining}


@dataclass(frozen=True)
class StoredBid:
    agent: str
    bid: float
    tokens: Sequence[str]
    probs: np.ndarray
    reference: bool = False

    def distribution(self) -> dict[str, float]:
        return dict(zip(self.tokens, self.probs.tolist(), strict=True))


@dataclass(frozen=True)
class RoundRecord:
    """What a commit writes for one round: its broadcast result (and the bytes it is broadcast as),
    seed, opening time and bids."""

    market: str
    result: RoundResult
    seed: bytes
    opened_at: float
    bids: Sequence[StoredBid]
    payload: bytes


@dataclass(frozen=True)
class StoredRound:
    market: str
    round: int
    token: str | None
    seed: bytes
    seed_commitment: str
    bids: list[StoredBid]
    payments: dict[str, float]
    sponsors: dict[str, float]
    result: RoundResult
    opened_at: float
    committed_at: float


@dataclass(frozen=True)
class StoredMarket:
    """A market as the ledger holds it: enough to list it, audit it, or resume it."""

    id: str
    definition: dict[str, Any]
    opened_at: float
    seq: int
    closed: MarketClosed | None
    last_round: int = 0
    tokens: list[str] = field(default_factory=list)
    idle_streak: int = 0
    balances: dict[str, float] = field(default_factory=dict)

    @property
    def revenue(self) -> float:
        return sum(self.balances.values())

    @property
    def prompt(self) -> str:
        return str(self.definition.get("settings", {}).get("prompt", ""))

    @property
    def text(self) -> str:
        return self.prompt + "".join(self.tokens)


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name if it has none), for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@dataclass(frozen=True)
class TickWrite:
    """What one group commit writes in one transaction (``Store.commit``): ``rounds``, the markets'
    ``closings``, the ``accounts`` they leave, name ``bindings`` (agent -> secret hash) and the
    exchange's notice seq (``exchange_seq``, if it moved), at ``committed_at``. ``fence``: market ->
    the lease epoch the committing shard holds; a store shared by shards writes nothing and raises
    :class:`FencedOut` if another shard took one of them (a store of one owner ignores it)."""

    rounds: Sequence[RoundRecord] = ()
    closings: Sequence[MarketClosed] = ()
    accounts: Mapping[str, AccountState] | None = None
    exchange_seq: int | None = None
    committed_at: float = 0.0
    bindings: Mapping[str, str] | None = None
    fence: Mapping[str, int] | None = None

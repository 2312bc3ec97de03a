"""The store interface: everything the exchange, the audit, the exports and the commands ask of an
exchange's record, whatever holds it (the embedded SQLite file, or a database server).

A store decides nothing: it keeps what the exchange decided, and answers what it holds. Its
guarantees, which every implementation keeps:

- a :meth:`Store.commit` is one transaction: every round of a tick, their bids, payments and
  sponsors, the markets that ended, the accounts they touched, name bindings and the exchange's
  notice seq are durable together or not at all (the exchange broadcasts only after it returns);
- rounds, bids, payments and sponsors are append-only, enforced by the store itself;
- every failure to store is a :class:`~auctioneer.ledger.records.LedgerError` with one line saying
  why, and leaves the record as it was before the transaction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, Protocol, Self

from auctioneer.ledger.records import AccountState, LedgerError, StoredMarket, StoredRound, TickWrite


class Store(Protocol):
    """An exchange's durable record."""

    #: Told each commit's duration, in seconds (the metrics' commit histogram).
    on_commit: Callable[[float], None] | None

    @property
    def location(self) -> str:
        """Where the record is, for messages (a path, or a database URL without its password)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc_info: object) -> None: ...

    # --- the exchange ---------------------------------------------------------------------

    def exchange_seq(self) -> int:
        """The exchange's latest notice seq."""
        ...

    def default_market(self) -> str | None: ...

    def commits(self) -> int:
        """How many group commits wrote rounds."""
        ...

    # --- markets --------------------------------------------------------------------------

    def create_market(
        self,
        market: str,
        definition: dict[str, Any],
        opened_at: float,
        exchange_seq: int,
        default: bool = False,
        owner: str | None = None,
    ) -> None:
        """Record a new market (and the exchange seq of its announcement) durably; ``LedgerError`` if
        the id is taken. ``owner``: the shard that serves it (a store of one owner ignores it)."""
        ...

    def update_definition(self, market: str, definition: dict[str, Any]) -> None: ...

    def has_market(self, market: str) -> bool: ...

    def market(self, market: str) -> StoredMarket | None: ...

    def markets(self, open_only: bool = False) -> list[StoredMarket]:
        """Every market (or every open one), oldest first."""
        ...

    def latest_markets(self, limit: int, ended_only: bool = False) -> list[StoredMarket]:
        """The ``limit`` markets (or ended markets) opened last, oldest first."""
        ...

    def market_ids(self) -> list[str]: ...

    def market_count(self) -> int: ...

    # --- rounds ---------------------------------------------------------------------------

    def commit(self, tick: TickWrite) -> None:
        """Write ``tick`` in one transaction (:class:`~auctioneer.ledger.records.TickWrite` says what
        it holds; a shared store raises ``FencedOut`` and writes nothing if its fence fails)."""
        ...

    async def commit_async(self, tick: TickWrite) -> None:
        """:meth:`commit` from the exchange's event loop: a store whose commit waits on a server lets
        the loop go on (answering requests) during the round trips; a local store commits in place."""
        ...

    async def close_async_commits(self) -> None:
        """Release what :meth:`commit_async` holds of the event loop, before the loop ends."""
        ...

    def results_since(self, market: str, seq: int, limit: int, max_bytes: int) -> tuple[list[bytes], bool]:
        """A market's stored ``round_result`` broadcasts with ``seq`` above ``seq``, oldest first, as
        the bytes they were broadcast as, and whether more remain: at most ``limit`` and, past the
        first, at most ``max_bytes`` in all."""
        ...

    def rounds(self, market: str) -> Iterator[StoredRound]:
        """Every committed round of a market with its bids, payments and sponsors, in order, one at
        a time (a record may hold more than fits in memory)."""
        ...

    def round_count(self) -> int: ...

    def commit_rate(self) -> float:
        """Rounds committed per second between the first commit and the last (NaN before two)."""
        ...

    def balances(self, market: str) -> dict[str, float]:
        """Total paid per agent in one market, for the agents that paid anything there."""
        ...

    # --- agents and their accounts --------------------------------------------------------

    def accounts(self) -> dict[str, AccountState]:
        """Every agent's account as of the last commit (one row each)."""
        ...

    def spent(self) -> dict[str, float]:
        """Total paid per agent across the exchange, summed over its payments (the audit's truth)."""
        ...

    def set_budget(self, agent: str, account: AccountState, set_at: float) -> None:
        """Record an operator's budget for ``agent`` (``account.budget``, and the account) durably."""
        ...

    def operator_budgets(self) -> dict[str, float | None]:
        """agent -> the budget an operator last set for it (None: unlimited)."""
        ...

    def binding(self, agent: str) -> str | None:
        """The hash of the resume secret ``agent`` is bound to, if it ever had a bid committed."""
        ...

    # --- exports (see auctioneer.ledger.export) -------------------------------------------

    def document(self, market: str | None = None) -> dict[str, Any]:
        """One market's whole record as JSON-ready data."""
        ...

    def overview(self, last: int | None = None) -> dict[str, Any]:
        """Every market (or the ``last`` opened) and every agent's budget account."""
        ...


class ClosingStore(ABC):
    """What every store does alike: it closes at the end of a ``with`` block, and one opened to be
    read must already hold a market (reading never creates one)."""

    @property
    @abstractmethod
    def location(self) -> str: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def market_count(self) -> int: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def holding_a_market(self) -> Self:
        """This store, if it holds a market; else it is closed, and refused with one line."""
        if not self.market_count():
            self.close()
            raise LedgerError(f"{self.location} holds no market")
        return self

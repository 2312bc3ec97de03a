"""An exchange's durable record behind one interface (:class:`Store`), and the stores that hold it.

| module | owns |
|---|---|
| ``store`` | the :class:`Store` protocol: what the exchange, the audit and the commands ask of a record |
| ``records`` | the values that cross it (rounds to commit, stored rounds and markets, accounts) |
| ``rows`` | records as SQL rows and back, the same for every SQL store |
| ``export`` | the JSON documents of a record (``auctioneer ledger``), built from the interface's reads |
| ``sqlite`` | the embedded default: one SQLite file (:class:`SqliteLedger`) |
| ``sqlite_schema`` | that file's layout, its upgrades and the migration of 0.1's files |
| ``lock`` | one exchange per SQLite file |

:func:`open_ledger` opens the store a ``--db`` names.
"""

from __future__ import annotations

from pathlib import Path

from auctioneer.ledger.lock import lock_file, served_elsewhere, serving
from auctioneer.ledger.records import (
    AccountState,
    LedgerError,
    RoundRecord,
    StoredBid,
    StoredMarket,
    StoredRound,
    account_row,
)
from auctioneer.ledger.sqlite import SqliteLedger
from auctioneer.ledger.sqlite_schema import SCHEMA_VERSION, written_by_v1
from auctioneer.ledger.store import Store

Ledger = SqliteLedger  # the embedded default store

__all__ = [
    "SCHEMA_VERSION",
    "AccountState",
    "Ledger",
    "LedgerError",
    "RoundRecord",
    "SqliteLedger",
    "Store",
    "StoredBid",
    "StoredMarket",
    "StoredRound",
    "account_row",
    "lock_file",
    "open_ledger",
    "served_elsewhere",
    "serving",
    "written_by_v1",
]


def open_ledger(db: Path | str, existing: bool = False, durable: bool = True) -> Store:
    """The store ``db`` names: a path is an SQLite file. ``existing``: it must already hold a
    market (a reader never creates one)."""
    path = Path(db)
    return SqliteLedger.open_existing(path) if existing else SqliteLedger(path, durable)

"""An exchange's durable record behind one interface (:class:`Store`), and the stores that hold it.

| module | owns |
|---|---|
| ``store`` | the :class:`Store` protocol: what the exchange, the audit and the commands ask of a record |
| ``records`` | the values that cross it (rounds to commit, stored rounds and markets, accounts) |
| ``rows`` | records as SQL rows and back, the same for every SQL store |
| ``export`` | the JSON documents of a record (``auctioneer ledger``), built from the interface's reads |
| ``sqlite`` | the embedded default: one SQLite file (:class:`SqliteLedger`) |
| ``sqlite_schema`` | that file's layout, its upgrades and the migration of 0.1's files |
| ``postgres`` | a PostgreSQL database shared by the shards of an exchange (:class:`PostgresLedger`) |
| ``postgres_schema`` | its layout (``postgres_schema.sql``) and append-only triggers |
| ``postgres_commit`` | the statements of a tick's commit there, as a plan that blocking and async drivers run |
| ``postgres_committer`` | how a shard's commits run: blocking or on the event loop, retried while the server is away |
| ``postgres_arrays`` | columns sent to it whole, in PostgreSQL's binary array format |
| ``lock`` | one exchange per SQLite file |

:func:`open_ledger` opens the store a ``--db`` names.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from auctioneer.ledger.lock import lock_file, served_elsewhere, serving
from auctioneer.ledger.postgres import DEFAULT_SHARD, PostgresLedger, is_postgres_url
from auctioneer.ledger.records import (
    AccountState,
    FencedOut,
    LedgerError,
    RoundRecord,
    StoredBid,
    StoredMarket,
    StoredRound,
    TickWrite,
    account_row,
)
from auctioneer.ledger.sqlite import SqliteLedger
from auctioneer.ledger.sqlite_schema import SCHEMA_VERSION, written_by_v1
from auctioneer.ledger.store import Store

Ledger = SqliteLedger  # the embedded default store

__all__ = [
    "DEFAULT_SHARD",
    "SCHEMA_VERSION",
    "AccountState",
    "FencedOut",
    "Ledger",
    "LedgerError",
    "PostgresLedger",
    "RoundRecord",
    "SqliteLedger",
    "Store",
    "StoredBid",
    "StoredMarket",
    "StoredRound",
    "TickWrite",
    "account_row",
    "holding",
    "is_postgres_url",
    "lock_file",
    "open_ledger",
    "served_elsewhere",
    "serving",
    "written_by_v1",
]


def open_ledger(
    db: Path | str,
    existing: bool = False,
    durable: bool = True,
    shard: str | None = None,
    lease_seconds: float = 2.0,
) -> Store:
    """The store ``db`` names: a ``postgresql://`` URL is a PostgreSQL database (this process serving
    as ``shard`` of its exchange, if named), anything else an SQLite file's path. ``existing``: it
    must already hold a market (a reader never creates one)."""
    if isinstance(db, str) and is_postgres_url(db):
        ledger = PostgresLedger(db, shard or DEFAULT_SHARD, lease_seconds, serving=shard is not None)
        if existing and not ledger.market_count():
            ledger.close()
            raise LedgerError(f"{ledger.location} holds no market")
        return ledger
    path = Path(db)
    return SqliteLedger.open_existing(path) if existing else SqliteLedger(path, durable)


def holding(db: Path | str) -> AbstractContextManager[None]:
    """What an exchange serving ``db`` holds while it serves: an SQLite file's lock (one exchange per
    file); nothing for PostgreSQL, where shards share the database and leases decide who owns what."""
    if isinstance(db, str) and is_postgres_url(db):
        return nullcontext()
    return serving(Path(db))

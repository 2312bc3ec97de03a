"""Copying an SQLite exchange into PostgreSQL (``auctioneer migrate --db FILE --to URL``).

Every row of every table, as it is: markets, rounds (their numbers, and each round's result as the
bytes that were broadcast), bids, payments, sponsors, accounts, operators' budgets and name
bindings, and the exchange's default market, commit count and notice seq (the latter for the shard
``main``). The copy is one transaction into a database that holds no market yet; afterwards it is
audited (every round replayed through the mechanism, every budget checked), and the source file is
left as it was. Open markets get no lease: the first shard to serve the database takes them.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from auctioneer.audit import audit_ledger
from auctioneer.ledger.postgres import DEFAULT_SHARD, PostgresLedger
from auctioneer.ledger.records import LedgerError
from auctioneer.ledger.sqlite import SqliteLedger

# Each table's columns, in the order rows are copied (parents first).
TABLES = (
    ("markets", ("market", "definition", "opened_at", "seq", "closed")),
    ("rounds", ("id", "market", "round", "token", "seed", "seed_commitment", "result_seq", "opened_at",
                "committed_at", "result")),
    ("bids", ("round_id", "agent", "bid", "tokens", "probs", "reference")),
    ("payments", ("round_id", "agent", "amount")),
    ("sponsors", ("round_id", "sponsor", "share")),
    ("accounts", ("agent", "budget", "spent")),
    ("budgets", ("agent", "budget", "set_at")),
    ("agents", ("agent", "secret_hash", "bound_at")),
)  # fmt: skip
BATCH = 5000


@dataclass(frozen=True)
class Copied:
    """What was copied (rows per table) and what the audit of the copy found."""

    rows: dict[str, int]
    rounds_verified: int
    problems: list[str]


def copy_to_postgres(path: Path, url: str) -> Copied:
    """Copy the SQLite exchange at ``path`` into the PostgreSQL database at ``url``, then audit it."""
    SqliteLedger.open_existing(path).close()  # refuses what is not a ledger; brings an older one up to date
    with PostgresLedger(url) as target:
        if target.market_count():
            raise LedgerError(f"{target.location} already holds markets: copy into an empty database")
        counts: dict[str, int] = {}
        source = contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True))
        with source as rows_of, target.connection() as conn, conn.transaction():
            for table, columns in TABLES:
                values = ", ".join("%s::jsonb" if column == "definition" else "%s" for column in columns)
                insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"
                rows = rows_of.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {columns[0]}")
                counts[table] = 0
                while batch := rows.fetchmany(BATCH):
                    with conn.cursor() as cursor:
                        cursor.executemany(insert, batch)
                    counts[table] += len(batch)
            conn.execute("SELECT setval('round_ids', GREATEST((SELECT COALESCE(MAX(id), 0) FROM rounds), 1))")
            meta = dict(rows_of.execute("SELECT key, value FROM meta").fetchall())
            for key in ("default_market", "commits"):
                if key in meta:
                    conn.execute(
                        "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value ="
                        " excluded.value",
                        (key, meta[key]),
                    )
            conn.execute(
                "UPDATE shards SET exchange_seq = %s WHERE shard = %s",
                (int(meta.get("exchange_seq", 0)), DEFAULT_SHARD),
            )
        verdicts, budgets = audit_ledger(target)
    problems = [f"market {v.market} round {v.round}: {'; '.join(v.problems)}" for v in verdicts if not v.ok]
    return Copied(counts, len(verdicts), problems + budgets)

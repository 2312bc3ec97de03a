"""The embedded store: an exchange's ledger in one SQLite file (WAL, group commits).

The layout and its upgrades are :mod:`auctioneer.ledger.sqlite_schema`'s; this module writes and
reads it. :meth:`SqliteLedger.commit` writes every round that closed in one tick of the exchange,
every market that ended and the accounts they touched in **one** transaction: one fsync for many
markets. Before and after, it checks that the database file (and its write-ahead log) are still
the ones it opened: a ledger deleted or replaced under a running exchange stops it before anything
else is broadcast. Every SQLite failure (a full or read-only disk) is a :class:`LedgerError` with
one line saying why.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from auctioneer.ledger.export import Exports
from auctioneer.ledger.records import AccountState, LedgerError, StoredMarket, StoredRound, TickWrite
from auctioneer.ledger.rows import (
    page_of_results,
    round_inserts,
    round_rows,
    stored_bid,
    stored_market,
    stored_result,
)
from auctioneer.ledger.sqlite_schema import prepare, read_meta, write_meta, write_transaction
from auctioneer.ledger.store import ClosingStore
from protocol import encode

log = logging.getLogger(__name__)

UPSERT_ACCOUNT = (
    "INSERT INTO accounts(agent, budget, reserved, spent) VALUES (?, ?, ?, ?) ON CONFLICT(agent) "
    "DO UPDATE SET budget = excluded.budget, reserved = excluded.reserved, spent = excluded.spent"
)
MARKET_COLUMNS = "SELECT market, definition, opened_at, seq, closed FROM markets"
INSERTS = round_inserts("?")


class SqliteLedger(Exports, ClosingStore):
    """An exchange's ledger in one SQLite file (a :class:`~auctioneer.ledger.store.Store`)."""

    def __init__(self, path: Path | str, durable: bool = True) -> None:
        """``durable=False`` skips fsync (for simulations, where a crash just means running again)."""
        path = self.path = Path(path)
        self._wal = path.with_name(path.name + "-wal")
        self.on_commit: Callable[[float], None] | None = None
        set_aside_orphans(path)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            prepare(self._db, path)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{path} is not a usable SQLite ledger: {exc}") from None
        self._files = {file: _file_identity(file) for file in (path, self._wal)}

    @classmethod
    def open_existing(cls, path: Path | str) -> SqliteLedger:
        """Open a ledger that must already hold a market (reading never creates one)."""
        path = Path(path)
        if not path.is_file():
            raise LedgerError(f"no ledger at {path} (pass --db PATH of an exchange's database)")
        return cls(path).holding_a_market()

    @property
    def location(self) -> str:
        return str(self.path)

    def close(self) -> None:
        self._db.close()

    def check_files(self) -> None:
        """Raise :class:`LedgerError` if the database or its write-ahead log is no longer the file this
        ledger opened (deleted, or replaced): whatever is written from then on could never be read."""
        for file, known in self._files.items():
            current = _file_identity(file)
            if known is None:
                self._files[file] = current  # the log appears with the first write
            elif current != known:
                raise LedgerError(
                    f"the ledger file {file} was deleted or replaced while the exchange was running; "
                    "stopping before broadcasting what can no longer be stored"
                )

    # --- the exchange ---------------------------------------------------------------------

    def exchange_seq(self) -> int:
        return int(read_meta(self._db, "exchange_seq") or 0)

    def commits(self) -> int:
        return int(read_meta(self._db, "commits") or 0)

    def default_market(self) -> str | None:
        return read_meta(self._db, "default_market")

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
        try:
            with write_transaction(self._db, self.path) as db:
                db.execute(
                    "INSERT INTO markets(market, definition, opened_at) VALUES (?, ?, ?)",
                    (market, json.dumps(definition, sort_keys=True), opened_at),
                )
                write_meta(db, "exchange_seq", str(exchange_seq))
                if default:
                    write_meta(db, "default_market", market)
        except sqlite3.IntegrityError:
            raise LedgerError(f"a market {market!r} already exists in {self.path}") from None

    def update_definition(self, market: str, definition: dict[str, Any]) -> None:
        with write_transaction(self._db, self.path) as db:
            db.execute(
                "UPDATE markets SET definition = ? WHERE market = ?", (json.dumps(definition, sort_keys=True), market)
            )

    def market_ids(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT market FROM markets ORDER BY opened_at, market")]

    def market_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM markets").fetchone()[0])

    def has_market(self, market: str) -> bool:
        return self._db.execute("SELECT 1 FROM markets WHERE market = ?", (market,)).fetchone() is not None

    def market(self, market: str) -> StoredMarket | None:
        row = self._db.execute(MARKET_COLUMNS + " WHERE market = ?", (market,)).fetchone()
        return None if row is None else self._stored_market(row)

    def markets(self, open_only: bool = False) -> list[StoredMarket]:
        query = MARKET_COLUMNS + (" WHERE closed IS NULL" if open_only else "") + " ORDER BY opened_at, market"
        return [self._stored_market(row) for row in self._db.execute(query).fetchall()]

    def latest_markets(self, limit: int, ended_only: bool = False) -> list[StoredMarket]:
        rows = self._db.execute(
            MARKET_COLUMNS
            + (" WHERE closed IS NOT NULL" if ended_only else "")
            + " ORDER BY opened_at DESC, market DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [self._stored_market(row) for row in reversed(rows)]

    def _stored_market(self, row: tuple[Any, ...]) -> StoredMarket:
        market = row[0]
        rounds = self._db.execute(
            "SELECT round, token, result_seq FROM rounds WHERE market = ? ORDER BY round", (market,)
        )
        return stored_market(row, rounds, self.balances(market))

    # --- rounds ---------------------------------------------------------------------------

    def commit(self, tick: TickWrite) -> None:
        """``tick`` in one transaction (a store of one owner: its fence is ignored)."""
        started = time.perf_counter()
        self.check_files()
        with write_transaction(self._db, self.path) as db:
            first_id = db.execute("SELECT COALESCE(MAX(id), 0) FROM rounds").fetchone()[0] + 1
            for statement, rows in zip(INSERTS, round_rows(tick.rounds, tick.committed_at, first_id), strict=True):
                db.executemany(statement, rows)
            if tick.bindings:
                db.executemany(
                    "INSERT OR IGNORE INTO agents(agent, secret_hash, bound_at) VALUES (?, ?, ?)",
                    [(agent, secret_hash, tick.committed_at) for agent, secret_hash in tick.bindings.items()],
                )
            for closing in tick.closings:
                db.execute(
                    "UPDATE markets SET closed = ?, seq = MAX(seq, ?) WHERE market = ?",
                    (encode(closing), closing.seq, closing.market),
                )
            if tick.accounts:
                db.executemany(UPSERT_ACCOUNT, [(agent, *state) for agent, state in tick.accounts.items()])
            if tick.exchange_seq is not None:
                write_meta(db, "exchange_seq", str(tick.exchange_seq))
            if tick.rounds:
                write_meta(db, "commits", str(self.commits() + 1))
        self.check_files()
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - started)

    async def commit_async(self, tick: TickWrite) -> None:
        """:meth:`commit`, in place: a local commit is short, and the event loop waits for it."""
        self.commit(tick)

    async def close_async_commits(self) -> None:
        """Nothing to close: the commits share the store's one connection."""

    def results_since(self, market: str, seq: int, limit: int, max_bytes: int) -> tuple[list[bytes], bool]:
        rows = self._db.execute(
            "SELECT result FROM rounds WHERE market = ? AND result_seq > ? ORDER BY result_seq LIMIT ?",
            (market, seq, limit + 1),
        )
        return page_of_results((data for (data,) in rows), limit, max_bytes)

    def rounds(self, market: str) -> Iterator[StoredRound]:
        # Row by row (never all at once): a ledger may hold more than fits in memory.
        for key, number, token, seed, commitment, result, opened_at, committed_at in self._db.execute(
            "SELECT id, round, token, seed, seed_commitment, result, opened_at, committed_at FROM rounds"
            " WHERE market = ? ORDER BY round",
            (market,),
        ):
            bids = self._db.execute(
                "SELECT agent, bid, tokens, probs, reference FROM bids WHERE round_id = ? ORDER BY agent", (key,)
            )
            yield StoredRound(
                market,
                number,
                token,
                bytes(seed),
                commitment,
                [stored_bid(*row) for row in bids],
                self._pairs("SELECT agent, amount FROM payments WHERE round_id = ? ORDER BY agent", key),
                self._pairs("SELECT sponsor, share FROM sponsors WHERE round_id = ? ORDER BY sponsor", key),
                stored_result(result),
                opened_at,
                committed_at,
            )

    def _pairs(self, query: str, round_id: int) -> dict[str, float]:
        return {name: float(value) for name, value in self._db.execute(query, (round_id,))}

    def round_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM rounds").fetchone()[0])

    def commit_rate(self) -> float:
        count, first, last = self._db.execute(
            "SELECT COUNT(*), MIN(committed_at), MAX(committed_at) FROM rounds"
        ).fetchone()
        return count / (last - first) if count and last > first else float("nan")

    def balances(self, market: str) -> dict[str, float]:
        rows = self._db.execute(
            "SELECT agent, SUM(amount) FROM rounds JOIN payments ON round_id = id WHERE market = ?"
            " GROUP BY agent HAVING SUM(amount) > 0 ORDER BY agent",
            (market,),
        )
        return {agent: float(total) for agent, total in rows}

    # --- agents and their accounts --------------------------------------------------------

    def accounts(self) -> dict[str, AccountState]:
        rows = self._db.execute("SELECT agent, budget, reserved, spent FROM accounts ORDER BY agent")
        return {agent: AccountState(budget, float(reserved), float(spent)) for agent, budget, reserved, spent in rows}

    def spent(self) -> dict[str, float]:
        rows = self._db.execute("SELECT agent, SUM(amount) FROM payments GROUP BY agent ORDER BY agent")
        return {agent: float(total) for agent, total in rows}

    def set_budget(self, agent: str, account: AccountState, set_at: float) -> None:
        with write_transaction(self._db, self.path) as db:
            db.execute(
                "INSERT INTO budgets(agent, budget, set_at) VALUES (?, ?, ?) ON CONFLICT(agent) "
                "DO UPDATE SET budget = excluded.budget, set_at = excluded.set_at",
                (agent, account.budget, set_at),
            )
            db.execute(UPSERT_ACCOUNT, (agent, *account))

    def operator_budgets(self) -> dict[str, float | None]:
        return dict(self._db.execute("SELECT agent, budget FROM budgets ORDER BY agent").fetchall())

    def binding(self, agent: str) -> str | None:
        row = self._db.execute("SELECT secret_hash FROM agents WHERE agent = ?", (agent,)).fetchone()
        return None if row is None else str(row[0])


def set_aside_orphans(path: Path) -> None:
    """A write-ahead log (or its index) left beside a ledger that is gone (deleted under a running
    exchange) belongs to no database: SQLite would replay its frames into the new, empty file. Such
    files are renamed aside (``FILE-wal.orphan-<time>``) before the new ledger is created."""
    if path.exists():
        return
    for suffix in ("-wal", "-shm"):
        orphan = path.with_name(path.name + suffix)
        if orphan.exists():
            kept = orphan.with_name(f"{orphan.name}.orphan-{int(time.time())}")
            orphan.rename(kept)
            log.warning("%s has no database beside it: set aside as %s", orphan, kept)


def _file_identity(path: Path) -> tuple[int, int] | None:
    """The file's (device, inode), or None if there is no such file."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino

"""The SQLite ledger of an exchange: every market's durable record in one file (WAL, group commits).

Tables:

- ``meta``: the schema version, the exchange's notice seq, the default market, the commit count;
- ``markets``: one row per market: its definition (settings, invited agents, reference agent), its
  feed seq as of its opening (or migration) and its closing, its ``market_closed`` message once it
  ended; between them each committed round carries its own (``result_seq``), so a commit does not
  rewrite a row per market (a market's seq is the larger of the two);
- ``rounds``, ``bids``, ``payments``, ``sponsors``: one row per committed round (with when it opened
  and when it was committed, Unix seconds), bid, payment and sponsor share, append-only (triggers).
  Rounds are unique per market and round number and numbered (``id``) in the order they were
  committed; bids, payments and sponsors are keyed by that number (``round_id``), so that every
  commit appends at the end of each table whatever markets it spans. A bid row marked ``reference``
  holds a live reference agent's distribution and the weight it was given; it never pays;
- ``accounts``: each agent's budget and, as of the last commit, what its bids in open rounds
  reserve and what it has spent (the sum of its payments, kept so that a restart reads one row
  per agent, not every payment; the audit checks the two agree);
- ``budgets``: the budgets operators set at run time (``set_budget``; NULL: unlimited), which win
  over the exchange's settings from then on, across restarts;
- ``agents``: without CurveZMQ, the hash of the resume secret each name is bound to (written with
  the agent's first committed bid: a name that never bid is not kept).

:meth:`Ledger.commit` writes every round that closed in one tick of the exchange, every market
that ended and the accounts they touched in **one** transaction: one fsync for many markets. Before
and after, it checks that the database file (and its write-ahead log) are still the ones it opened:
a ledger deleted or replaced under a running exchange stops it before anything else is broadcast.
Every SQLite failure (a full or read-only disk) is a :class:`LedgerError` with one line saying why.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import msgpack
import numpy as np

from protocol import LIMITS, decode, encode
from protocol.codec import pack
from protocol.distribution import probs_bytes
from protocol.messages import MarketClosed, Message, RoundResult

log = logging.getLogger(__name__)

_SERVED_HERE: set[Path] = set()  # the lock files this process holds (see serving)

SCHEMA_VERSION = "5"


def round_tables(suffix: str = "") -> str:
    """The tables of committed rounds (named with ``suffix`` while an upgrade builds them).

    Rounds are numbered in the order they were committed (``id``); their bids, payments and
    sponsors are keyed by that number, so every commit appends to the end of each table and its
    key, however many markets it spans. (Keyed by market and round, as up to schema 4, a commit of
    300 rounds of 300 markets wrote into 300 scattered pages of each key: the SQLite work of a
    round fell from about 90 to 31 us when this changed.)"""
    return f"""
CREATE TABLE IF NOT EXISTS rounds{suffix} (
    id INTEGER PRIMARY KEY,
    market TEXT NOT NULL REFERENCES markets(market),
    round INTEGER NOT NULL,
    token TEXT,
    seed BLOB NOT NULL,
    seed_commitment TEXT NOT NULL,
    result_seq INTEGER NOT NULL,
    opened_at REAL NOT NULL,
    committed_at REAL NOT NULL,
    result BLOB NOT NULL,
    UNIQUE (market, round)
);
CREATE TABLE IF NOT EXISTS bids{suffix} (
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    agent TEXT NOT NULL,
    bid REAL NOT NULL,
    tokens BLOB NOT NULL,
    probs BLOB NOT NULL,
    reference INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (round_id, agent)
);
CREATE TABLE IF NOT EXISTS payments{suffix} (
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    agent TEXT NOT NULL,
    amount REAL NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (round_id, agent)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sponsors{suffix} (
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    sponsor TEXT NOT NULL,
    share REAL NOT NULL CHECK (share > 0 AND share <= 1),
    PRIMARY KEY (round_id, sponsor)
) WITHOUT ROWID;
"""


SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS markets (
    market TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    opened_at REAL NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    closed BLOB
);
CREATE INDEX IF NOT EXISTS markets_by_opening ON markets(opened_at, market);
CREATE INDEX IF NOT EXISTS open_markets ON markets(opened_at, market) WHERE closed IS NULL;
"""
    + round_tables()
    + """CREATE TABLE IF NOT EXISTS accounts (
    agent TEXT PRIMARY KEY,
    budget REAL,
    reserved REAL NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    spent REAL NOT NULL DEFAULT 0 CHECK (spent >= 0)
);
CREATE TABLE IF NOT EXISTS budgets (
    agent TEXT PRIMARY KEY,
    budget REAL CHECK (budget IS NULL OR budget >= 0),
    set_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (
    agent TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    bound_at REAL NOT NULL
);
CREATE TRIGGER IF NOT EXISTS rounds_append_only BEFORE UPDATE ON rounds
    BEGIN SELECT RAISE(ABORT, 'rounds are append-only'); END;
CREATE TRIGGER IF NOT EXISTS rounds_no_delete BEFORE DELETE ON rounds
    BEGIN SELECT RAISE(ABORT, 'rounds are append-only'); END;
CREATE TRIGGER IF NOT EXISTS bids_append_only BEFORE UPDATE ON bids
    BEGIN SELECT RAISE(ABORT, 'bids are append-only'); END;
CREATE TRIGGER IF NOT EXISTS payments_append_only BEFORE UPDATE ON payments
    BEGIN SELECT RAISE(ABORT, 'payments are append-only'); END;
CREATE TRIGGER IF NOT EXISTS payments_no_delete BEFORE DELETE ON payments
    BEGIN SELECT RAISE(ABORT, 'payments are append-only'); END;
CREATE TRIGGER IF NOT EXISTS sponsors_append_only BEFORE UPDATE ON sponsors
    BEGIN SELECT RAISE(ABORT, 'sponsors are append-only'); END;
CREATE TRIGGER IF NOT EXISTS sponsors_no_delete BEFORE DELETE ON sponsors
    BEGIN SELECT RAISE(ABORT, 'sponsors are append-only'); END;
"""
)
UPSERT_ACCOUNT = (
    "INSERT INTO accounts(agent, budget, reserved, spent) VALUES (?, ?, ?, ?) ON CONFLICT(agent) "
    "DO UPDATE SET budget = excluded.budget, reserved = excluded.reserved, spent = excluded.spent"
)
# Schema 2 kept no ``spent``: it is added, and filled from the payments once, when such a file opens
# (and a ledger migrated from 0.1 is filled the same way), in one pass over the payments.
ADD_SPENT = "ALTER TABLE accounts ADD COLUMN spent REAL NOT NULL DEFAULT 0 CHECK (spent >= 0)"
FILL_SPENT = (
    "INSERT OR IGNORE INTO accounts(agent) SELECT DISTINCT agent FROM payments",
    "UPDATE accounts SET spent = paid.total FROM (SELECT agent, SUM(amount) AS total FROM payments GROUP BY agent)"
    " AS paid WHERE paid.agent = accounts.agent",
)
# Schemas up to 3 indexed payments by agent, for summing each agent's spending at start; since
# accounts keep it, the index only cost every commit a write into it per payment (at 100 payments a
# round, its scattered pages were 40 % of the commit). Dropped when such a file opens.
DROP_PAYMENTS_BY_AGENT = "DROP INDEX IF EXISTS payments_by_agent"
# Up to schema 4, bids, payments and sponsors were keyed by market and round: rebuilt once when such
# a file opens, each round numbered by the order it was committed in (its rowid).
REKEYED_COPIES = (
    "INSERT INTO rounds_rekeyed(id, market, round, token, seed, seed_commitment, result_seq, opened_at,"
    " committed_at, result) SELECT rowid, market, round, token, seed, seed_commitment, result_seq, opened_at,"
    " committed_at, result FROM rounds ORDER BY rowid",
    "INSERT INTO bids_rekeyed(round_id, agent, bid, tokens, probs, reference) SELECT r.id, b.agent, b.bid,"
    " b.tokens, b.probs, b.reference FROM bids AS b JOIN rounds_rekeyed AS r USING (market, round)"
    " ORDER BY r.id, b.agent",
    "INSERT INTO payments_rekeyed(round_id, agent, amount) SELECT r.id, p.agent, p.amount FROM payments AS p"
    " JOIN rounds_rekeyed AS r USING (market, round)",
    "INSERT INTO sponsors_rekeyed(round_id, sponsor, share) SELECT r.id, s.sponsor, s.share FROM sponsors AS s"
    " JOIN rounds_rekeyed AS r USING (market, round)",
)
ROUND_ROWS = ("bids", "payments", "sponsors")
REKEYED_SWAP = (
    *(f"DROP TABLE {table}" for table in (*ROUND_ROWS, "rounds")),
    *(f"ALTER TABLE {table}_rekeyed RENAME TO {table}" for table in ("rounds", *ROUND_ROWS)),
)


def statements(script: str) -> Iterator[str]:
    """A SQL script one statement at a time (``executescript`` would commit the open transaction)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement.strip()
            statement = ""


class AccountState(NamedTuple):
    """An agent's budget account as a commit leaves it: budget (None: unlimited), what its bids in
    open rounds reserve, what it has paid."""

    budget: float | None
    reserved: float
    spent: float


class LedgerError(Exception):
    """The database cannot be used as this exchange's ledger (the message says why)."""


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


class Ledger:
    """An exchange's ledger in one SQLite file."""

    def __init__(self, path: Path, durable: bool = True) -> None:
        """``durable=False`` skips fsync (for simulations, where a crash just means running again)."""
        self.path = path
        self._wal = path.with_name(path.name + "-wal")
        self.on_commit: Callable[[float], None] | None = None  # told each commit's duration, in seconds
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._refuse_older_schema()
            self._db.executescript(SCHEMA)
            stored = self._meta("schema")
            if stored is not None and stored.isdigit() and int(stored) > int(SCHEMA_VERSION):
                raise LedgerError(
                    f"{path} was written by a newer token-auction (ledger schema {stored}, this one reads "
                    f"{SCHEMA_VERSION}): upgrade token-auction to use it"
                )
            if stored != SCHEMA_VERSION:
                self._upgrade(stored)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{path} is not a usable SQLite ledger: {exc}") from None
        self._files = {file: _file_identity(file) for file in (path, self._wal)}

    def _upgrade(self, stored: str | None) -> None:
        """Bring a file of an older schema (or a new, empty one) to :data:`SCHEMA_VERSION` in one transaction."""
        rekey = "id" not in self._columns("rounds")
        if rekey:
            if served_elsewhere(self.path):
                raise LedgerError(
                    f"{self.path} is being served by an exchange of an earlier token-auction: stop it before"
                    " opening the file with this one, which renumbers its rounds once (the earlier exchange could not"
                    " write them)"
                )
            log.info(
                "%s: numbering its rounds in commit order (schema %s -> %s, once)", self.path, stored, SCHEMA_VERSION
            )
            self._db.execute("PRAGMA foreign_keys=OFF")  # tables are renamed under their references
        try:
            with self._transaction() as db:
                if "spent" not in self._columns("accounts"):
                    for statement in (ADD_SPENT, *FILL_SPENT):
                        db.execute(statement)
                db.execute(DROP_PAYMENTS_BY_AGENT)
                if rekey:
                    self._rekey(db)
                self._set_meta(db, "schema", SCHEMA_VERSION)
        finally:
            self._db.execute("PRAGMA foreign_keys=ON")
        if rekey:
            self._db.executescript(SCHEMA)  # the append-only triggers, dropped with the old tables

    def _rekey(self, db: sqlite3.Connection) -> None:
        """Copy the round tables keyed by round number, refusing rows whose round the file lacks."""
        for statement in (*statements(round_tables("_rekeyed")), *REKEYED_COPIES):
            db.execute(statement)
        for table in ROUND_ROWS:
            (orphans,) = db.execute(
                f"SELECT (SELECT COUNT(*) FROM {table}) - (SELECT COUNT(*) FROM {table}_rekeyed)"
            ).fetchone()
            if orphans:
                raise LedgerError(f"{self.path}: {orphans} of its {table} name no committed round; nothing was changed")
        for statement in REKEYED_SWAP:
            db.execute(statement)

    def _refuse_older_schema(self) -> None:
        if written_by_v1(self._db):
            raise LedgerError(
                f"{self.path} was written by token-auction 0.1 (one market per file); "
                f"`auctioneer migrate --db {self.path}` brings it to this version (keeping a copy)"
            )

    def _columns(self, table: str) -> set[str]:
        return {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}

    @classmethod
    def open_existing(cls, path: Path) -> Ledger:
        """Open a ledger that must already hold a market (reading never creates one)."""
        if not path.is_file():
            raise LedgerError(f"no ledger at {path} (pass --db PATH of an exchange's database)")
        ledger = cls(path)
        if not ledger.market_count():
            ledger.close()
            raise LedgerError(f"{path} holds no market")
        return ledger

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a SQLite failure (disk full, read-only, I/O error) is a
        :class:`LedgerError` and leaves the ledger as it was before the transaction."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot write the ledger {self.path}: {exc}") from None

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

    # --- meta -----------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def exchange_seq(self) -> int:
        return int(self._meta("exchange_seq") or 0)

    def commits(self) -> int:
        """How many group commits wrote rounds (each one fsync)."""
        return int(self._meta("commits") or 0)

    def default_market(self) -> str | None:
        return self._meta("default_market")

    # --- markets --------------------------------------------------------------------------

    def create_market(
        self, market: str, definition: dict[str, Any], opened_at: float, exchange_seq: int, default: bool = False
    ) -> None:
        """Record a new market (and the exchange seq of its announcement) durably."""
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO markets(market, definition, opened_at) VALUES (?, ?, ?)",
                    (market, json.dumps(definition, sort_keys=True), opened_at),
                )
                self._set_meta(db, "exchange_seq", str(exchange_seq))
                if default:
                    self._set_meta(db, "default_market", market)
        except sqlite3.IntegrityError:
            raise LedgerError(f"a market {market!r} already exists in {self.path}") from None

    def update_definition(self, market: str, definition: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE markets SET definition = ? WHERE market = ?", (json.dumps(definition, sort_keys=True), market)
            )

    def market_ids(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT market FROM markets ORDER BY opened_at, market")]

    def market_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM markets").fetchone()[0])

    def round_count(self) -> int:
        """How many rounds every market together committed."""
        return int(self._db.execute("SELECT COUNT(*) FROM rounds").fetchone()[0])

    def commit_rate(self) -> float:
        """Rounds committed per second between the first commit and the last (NaN before two commits)."""
        count, first, last = self._db.execute(
            "SELECT COUNT(*), MIN(committed_at), MAX(committed_at) FROM rounds"
        ).fetchone()
        return count / (last - first) if count and last > first else float("nan")

    def has_market(self, market: str) -> bool:
        return self._db.execute("SELECT 1 FROM markets WHERE market = ?", (market,)).fetchone() is not None

    def market(self, market: str) -> StoredMarket | None:
        row = self._db.execute(
            "SELECT market, definition, opened_at, seq, closed FROM markets WHERE market = ?", (market,)
        ).fetchone()
        return None if row is None else self._stored_market(row)

    def markets(self, open_only: bool = False) -> list[StoredMarket]:
        """Every market (or every open one), oldest first."""
        query = "SELECT market, definition, opened_at, seq, closed FROM markets"
        query += " WHERE closed IS NULL" if open_only else ""
        return [self._stored_market(row) for row in self._db.execute(query + " ORDER BY opened_at, market").fetchall()]

    def latest_markets(self, limit: int, ended_only: bool = False) -> list[StoredMarket]:
        """The ``limit`` markets (or ended markets) opened last, oldest first: what an exchange
        restarting lists, or an overview shows, without reading the whole history."""
        rows = self._db.execute(
            "SELECT market, definition, opened_at, seq, closed FROM markets"
            + (" WHERE closed IS NOT NULL" if ended_only else "")
            + " ORDER BY opened_at DESC, market DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [self._stored_market(row) for row in reversed(rows)]

    def _stored_market(self, row: tuple[Any, ...]) -> StoredMarket:
        market, definition, opened_at, seq, closed = row
        tokens = []
        idle = 0
        last_round = 0
        for number, token, result_seq in self._db.execute(
            "SELECT round, token, result_seq FROM rounds WHERE market = ? ORDER BY round", (market,)
        ):
            last_round, seq = number, max(seq, result_seq)
            if token is None:
                idle += 1
            else:
                idle = 0
                tokens.append(token)
        closing = _stored_message(closed) if closed is not None else None
        assert closing is None or isinstance(closing, MarketClosed)
        return StoredMarket(
            market,
            dict(json.loads(definition)),
            opened_at,
            seq,
            closing,
            last_round,
            tokens,
            idle,
            self.balances(market),
        )

    # --- group commit ---------------------------------------------------------------------

    def commit(
        self,
        rounds: Sequence[RoundRecord],
        closings: Sequence[MarketClosed] = (),
        accounts: Mapping[str, AccountState] | None = None,
        exchange_seq: int | None = None,
        committed_at: float = 0.0,
        bindings: Mapping[str, str] | None = None,
    ) -> None:
        """Write ``rounds`` (committed at ``committed_at``, Unix seconds), the markets' ``closings``,
        the ``accounts`` they leave, name ``bindings`` (agent -> secret hash) and the
        exchange's notice seq in one transaction. :class:`LedgerError` if it cannot be made durable."""
        started = time.perf_counter()
        self.check_files()
        with self._transaction() as db:
            self._write_rounds(db, rounds, committed_at)
            if bindings:
                db.executemany(
                    "INSERT OR IGNORE INTO agents(agent, secret_hash, bound_at) VALUES (?, ?, ?)",
                    [(agent, secret_hash, committed_at) for agent, secret_hash in bindings.items()],
                )
            for closing in closings:
                db.execute(
                    "UPDATE markets SET closed = ?, seq = MAX(seq, ?) WHERE market = ?",
                    (encode(closing), closing.seq, closing.market),
                )
            if accounts:
                db.executemany(UPSERT_ACCOUNT, [(agent, *state) for agent, state in accounts.items()])
            if exchange_seq is not None:
                self._set_meta(db, "exchange_seq", str(exchange_seq))
            if rounds:
                self._set_meta(db, "commits", str(self.commits() + 1))
        self.check_files()
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - started)

    @staticmethod
    def _write_rounds(db: sqlite3.Connection, records: Sequence[RoundRecord], committed_at: float) -> None:
        """Every table's rows for all ``records``, one statement per table."""
        rounds, bids, payments, sponsors = [], [], [], []
        last_id = db.execute("SELECT COALESCE(MAX(id), 0) FROM rounds").fetchone()[0]
        for round_id, record in enumerate(records, start=last_id + 1):
            result, market = record.result, record.market
            rounds.append(
                (round_id, market, result.round, result.token, record.seed, result.seed_commitment, result.seq,
                 record.opened_at, committed_at, record.payload)
            )  # fmt: skip
            bids += [
                (
                    round_id,
                    b.agent,
                    b.bid,
                    pack(b.tokens),
                    probs_bytes(b.probs),
                    int(b.reference),
                )
                for b in record.bids
            ]
            payments += [(round_id, agent, amount) for agent, amount in result.payments.items()]
            sponsors += [(round_id, sponsor, share) for sponsor, share in result.sponsors.items()]
        db.executemany(
            "INSERT INTO rounds(id, market, round, token, seed, seed_commitment, result_seq, opened_at, committed_at,"
            " result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rounds,
        )
        db.executemany(
            "INSERT INTO bids(round_id, agent, bid, tokens, probs, reference) VALUES (?, ?, ?, ?, ?, ?)", bids
        )
        db.executemany("INSERT INTO payments(round_id, agent, amount) VALUES (?, ?, ?)", payments)
        db.executemany("INSERT INTO sponsors(round_id, sponsor, share) VALUES (?, ?, ?)", sponsors)

    # --- reading --------------------------------------------------------------------------

    def balances(self, market: str) -> dict[str, float]:
        """Total paid per agent in one market, for the agents that paid anything there."""
        rows = self._db.execute(
            "SELECT agent, SUM(amount) FROM rounds JOIN payments ON round_id = id WHERE market = ?"
            " GROUP BY agent HAVING SUM(amount) > 0 ORDER BY agent",
            (market,),
        )
        return {agent: float(total) for agent, total in rows}

    def spent(self) -> dict[str, float]:
        """Total paid per agent across the exchange, summed over its payments (the audit's truth;
        :meth:`accounts` keeps the same total up to date)."""
        rows = self._db.execute("SELECT agent, SUM(amount) FROM payments GROUP BY agent ORDER BY agent")
        return {agent: float(total) for agent, total in rows}

    def binding(self, agent: str) -> str | None:
        """The hash of the resume secret ``agent`` is bound to, if it ever had a bid committed."""
        row = self._db.execute("SELECT secret_hash FROM agents WHERE agent = ?", (agent,)).fetchone()
        return None if row is None else str(row[0])

    def set_budget(self, agent: str, account: AccountState, set_at: float) -> None:
        """Record an operator's budget for ``agent`` (``account.budget``, and the account) durably."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO budgets(agent, budget, set_at) VALUES (?, ?, ?) ON CONFLICT(agent) "
                "DO UPDATE SET budget = excluded.budget, set_at = excluded.set_at",
                (agent, account.budget, set_at),
            )
            db.execute(UPSERT_ACCOUNT, (agent, *account))

    def operator_budgets(self) -> dict[str, float | None]:
        """agent -> the budget an operator last set for it (None: unlimited)."""
        return dict(self._db.execute("SELECT agent, budget FROM budgets ORDER BY agent").fetchall())

    def accounts(self) -> dict[str, AccountState]:
        """Every agent's account as of the last commit (one row each: what an exchange reads at start,
        however long its history)."""
        rows = self._db.execute("SELECT agent, budget, reserved, spent FROM accounts ORDER BY agent")
        return {agent: AccountState(budget, float(reserved), float(spent)) for agent, budget, reserved, spent in rows}

    def results_since(self, market: str, seq: int, limit: int, max_bytes: int) -> tuple[list[bytes], bool]:
        """A market's stored ``round_result`` broadcasts with ``seq`` above ``seq``, oldest first, as the
        bytes they were broadcast as, and whether more remain: at most ``limit`` of them and, past the
        first, at most ``max_bytes`` in all."""
        results: list[bytes] = []
        size = 0
        rows = self._db.execute(
            "SELECT result FROM rounds WHERE market = ? AND result_seq > ? ORDER BY result_seq LIMIT ?",
            (market, seq, limit + 1),
        )
        for (data,) in rows:
            size += len(data)
            if len(results) == limit or (results and size > max_bytes):
                return results, True
            results.append(bytes(data))
        return results, False

    def rounds(self, market: str) -> Iterator[StoredRound]:
        """Every committed round of a market with its bids, payments and sponsors, in order."""
        # Row by row (never all at once): a ledger may hold more than fits in memory.
        for key, number, token, seed, commitment, result, opened_at, committed_at in self._db.execute(
            "SELECT id, round, token, seed, seed_commitment, result, opened_at, committed_at FROM rounds"
            " WHERE market = ? ORDER BY round",
            (market,),
        ):
            bids = [
                StoredBid(agent, bid, msgpack.unpackb(tokens), np.frombuffer(probs, dtype="<f8"), bool(reference))
                for agent, bid, tokens, probs, reference in self._db.execute(
                    "SELECT agent, bid, tokens, probs, reference FROM bids WHERE round_id = ? ORDER BY agent", (key,)
                )
            ]
            payments = self._pairs("SELECT agent, amount FROM payments WHERE round_id = ? ORDER BY agent", key)
            sponsors = self._pairs("SELECT sponsor, share FROM sponsors WHERE round_id = ? ORDER BY sponsor", key)
            message = _stored_message(result)
            assert isinstance(message, RoundResult)
            yield StoredRound(
                market,
                number,
                token,
                bytes(seed),
                commitment,
                bids,
                payments,
                sponsors,
                message,
                opened_at,
                committed_at,
            )

    def _pairs(self, query: str, round_id: int) -> dict[str, float]:
        return {name: float(value) for name, value in self._db.execute(query, (round_id,))}

    # --- documents ------------------------------------------------------------------------

    def document(self, market: str | None = None) -> dict[str, Any]:
        """One market's whole record as JSON-ready data (``auctioneer ledger --market ID --json``).
        Without ``market``: the default market, or the only one."""
        market = market or self.default_market() or self._only_market()
        stored = self.market(market)
        if stored is None:
            raise LedgerError(f"{self.path} holds no market {market!r} (see auctioneer ledger --db {self.path})")
        rounds = []
        for record in self.rounds(market):
            result = record.result
            rounds.append(
                {
                    "round": record.round,
                    "token": record.token,
                    "distribution": result.distribution.as_mapping() if result.distribution else {},
                    "bids": {b.agent: {"bid": b.bid, "distribution": b.distribution()} for b in record.bids},
                    "payments": record.payments,
                    "sponsors": record.sponsors,
                    "seed": record.seed.hex(),
                    "seed_commitment": record.seed_commitment,
                }
            )
        settings = stored.definition.get("settings", {})
        prompt = str(settings.get("prompt", ""))
        return {
            "market": market,
            "prompt": prompt,
            "text": prompt + "".join(stored.tokens),
            "closed": stored.closed.reason if stored.closed else None,
            "settings": settings,
            "agents": stored.definition.get("agents"),
            "reference_agent": stored.definition.get("reference_agent"),
            "rounds": rounds,
            "balances": stored.balances,
        }

    def _only_market(self) -> str:
        ids = self.market_ids()
        if len(ids) != 1:
            raise LedgerError(f"{self.path} holds {len(ids)} markets: name one (--market ID)")
        return ids[0]

    def overview(self, last: int | None = None) -> dict[str, Any]:
        """Every market (or the ``last`` opened) and every agent's budget account (``auctioneer ledger``
        on an exchange); ``market_count`` counts them all."""
        accounts = self.accounts()
        markets = []
        for stored in self.markets() if last is None else self.latest_markets(last):
            settings = stored.definition.get("settings", {})
            markets.append(
                {
                    "market": stored.id,
                    "prompt": settings.get("prompt", ""),
                    "rounds": stored.last_round,
                    "text": settings.get("prompt", "") + "".join(stored.tokens),
                    "revenue": stored.revenue,
                    "closed": stored.closed.reason if stored.closed else None,
                }
            )
        return {
            "market_count": self.market_count(),
            "markets": markets,
            "accounts": {agent: account_row(account) for agent, account in accounts.items()},
            "commits": self.commits(),
        }


@contextmanager
def serving(path: Path) -> Iterator[None]:
    """Hold the ledger at ``path`` for one exchange while it serves (``FILE.lock``, released when the
    process ends, however it ends). Readers (``ledger``, ``audit``, the dashboard) never take it; a
    second exchange on the same file is refused with one line instead of interleaving its rounds
    with the first one's."""
    lock = lock_file(path)
    try:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LedgerError(f"cannot create the lock file {lock}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "?"
            raise LedgerError(
                f"another exchange (pid {holder}) is serving {path}: stop it first, or pass another --db"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
        _SERVED_HERE.add(lock)
        yield
    finally:
        _SERVED_HERE.discard(lock)
        os.close(descriptor)


def lock_file(path: Path) -> Path:
    """The lock an exchange serving the ledger at ``path`` holds (one whichever way the file is named:
    a symlink, ./market.db)."""
    real = path.resolve()
    return real.with_name(real.name + ".lock")


def served_elsewhere(path: Path) -> bool:
    """Whether another process holds the ledger at ``path`` for an exchange (see :func:`serving`)."""
    lock = lock_file(path)
    if lock in _SERVED_HERE:
        return False
    try:
        descriptor = os.open(lock, os.O_RDONLY)
    except OSError:  # no lock file (never served), or one this user cannot read: nothing to tell
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # closing releases the probe's own shared lock
    return False


def account_row(account: AccountState) -> dict[str, float | None]:
    """An agent's budget account: budget, spent, reserved (as of the last commit) and what remains."""
    budget, reserved, spent = account
    remaining = None if budget is None else budget - spent - reserved
    return {"budget": budget, "spent": spent, "reserved": reserved, "remaining": remaining}


def _file_identity(path: Path) -> tuple[int, int] | None:
    """The file's (device, inode), or None if there is no such file."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


def written_by_v1(db: sqlite3.Connection) -> bool:
    """Whether ``db`` has the layout token-auction 0.1 wrote: round tables and no ``markets``."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return "rounds" in tables and "markets" not in tables


def _stored_message(data: bytes) -> Message:
    """A message this ledger wrote: trusted, so decoded without the network's size limits."""
    return decode(data, LIMITS.stored)

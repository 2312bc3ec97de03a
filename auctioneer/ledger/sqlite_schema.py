"""The SQLite ledger's layout and every upgrade to it, token-auction 0.1's one-market files included.

Tables:

- ``meta``: the schema version, the exchange's notice seq, the default market, the commit count;
- ``markets``: one row per market: its definition (settings, invited agents, reference agent), its
  feed seq as of its opening (or migration) and its closing, its ``market_closed`` message once it
  ended; between them each committed round carries its own (``result_seq``), so a commit does not
  rewrite a row per market (a market's seq is the larger of the two);
- ``rounds``, ``bids``, ``payments``, ``sponsors``: one row per committed round (with when it opened
  and when it was committed, Unix seconds), bid, payment and sponsor share, append-only (triggers
  generated from :data:`APPEND_ONLY`). Rounds are unique per market and round number and numbered
  (``id``) in the order they were committed; bids, payments and sponsors are keyed by that number
  (``round_id``), so that every commit appends at the end of each table whatever markets it spans.
  A bid row marked ``reference`` holds a live reference agent's distribution and the weight it was
  given; it never pays;
- ``accounts``: each agent's budget and, as of the last commit, what its bids in open rounds
  reserve and what it has spent (the sum of its payments, kept so that a restart reads one row
  per agent, not every payment; the audit checks the two agree);
- ``budgets``: the budgets operators set at run time (``set_budget``; NULL: unlimited), which win
  over the exchange's settings from then on, across restarts;
- ``agents``: without CurveZMQ, the hash of the resume secret each name is bound to (written with
  the agent's first committed bid: a name that never bid is not kept).

:func:`prepare` brings any file this version can read to :data:`SCHEMA_VERSION` when it opens;
:func:`migrate_v01` rewrites a 0.1 file (``auctioneer migrate``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from auctioneer.ledger.lock import served_elsewhere
from auctioneer.ledger.records import LedgerError
from auctioneer.ledger.rows import APPEND_ONLY
from auctioneer.settings import MarketSettings
from protocol.errors import describe_validation_error

log = logging.getLogger(__name__)

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


def append_only_triggers(tables: tuple[str, ...] = APPEND_ONLY) -> str:
    """A trigger against UPDATE (``T_append_only``) and one against DELETE (``T_no_delete``) per table."""
    return "".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_{name} BEFORE {action} ON {table}\n"
        f"    BEGIN SELECT RAISE(ABORT, '{table} are append-only'); END;\n"
        for table in tables
        for name, action in (("append_only", "UPDATE"), ("no_delete", "DELETE"))
    )


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
"""
    + append_only_triggers()
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


@contextmanager
def write_transaction(db: sqlite3.Connection, path: Path) -> Iterator[sqlite3.Connection]:
    """One write transaction on ``db`` (in autocommit mode); a SQLite failure (disk full, read-only,
    I/O error) is a :class:`LedgerError` and leaves the ledger as it was before the transaction."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
    except sqlite3.IntegrityError:
        raise
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot write the ledger {path}: {exc}") from None


def read_meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def write_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value)
    )


def written_by_v1(db: sqlite3.Connection) -> bool:
    """Whether ``db`` has the layout token-auction 0.1 wrote: round tables and no ``markets``."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return "rounds" in tables and "markets" not in tables


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


# --- opening a file -------------------------------------------------------------------------------


def prepare(db: sqlite3.Connection, path: Path) -> None:
    """Give ``db`` this version's layout: a new file gets the schema, an older one is upgraded in
    place (in one transaction), a 0.1 file or one of a later version is refused in one line."""
    if written_by_v1(db):
        raise LedgerError(
            f"{path} was written by token-auction 0.1 (one market per file); "
            f"`auctioneer migrate --db {path}` brings it to this version (keeping a copy)"
        )
    db.executescript(SCHEMA)
    stored = read_meta(db, "schema")
    if stored is not None and stored.isdigit() and int(stored) > int(SCHEMA_VERSION):
        raise LedgerError(
            f"{path} was written by a newer token-auction (ledger schema {stored}, this one reads "
            f"{SCHEMA_VERSION}): upgrade token-auction to use it"
        )
    if stored != SCHEMA_VERSION:
        _upgrade(db, path, stored)


def _upgrade(db: sqlite3.Connection, path: Path, stored: str | None) -> None:
    """Bring a file of an older schema (or a new, empty one) to :data:`SCHEMA_VERSION` in one transaction."""
    rekey = "id" not in _columns(db, "rounds")
    if rekey:
        if served_elsewhere(path):
            raise LedgerError(
                f"{path} is being served by an exchange of an earlier token-auction: stop it before"
                " opening the file with this one, which renumbers its rounds once (the earlier exchange could not"
                " write them)"
            )
        log.info("%s: numbering its rounds in commit order (schema %s -> %s, once)", path, stored, SCHEMA_VERSION)
        db.execute("PRAGMA foreign_keys=OFF")  # tables are renamed under their references
    try:
        with write_transaction(db, path):
            if "spent" not in _columns(db, "accounts"):
                for statement in (ADD_SPENT, *FILL_SPENT):
                    db.execute(statement)
            db.execute(DROP_PAYMENTS_BY_AGENT)
            if rekey:
                _rekey(db, path)
            write_meta(db, "schema", SCHEMA_VERSION)
    finally:
        db.execute("PRAGMA foreign_keys=ON")
    if rekey:
        db.executescript(SCHEMA)  # the append-only triggers, dropped with the old tables


def _rekey(db: sqlite3.Connection, path: Path) -> None:
    """Copy the round tables keyed by round number, refusing rows whose round the file lacks."""
    for statement in (*statements(round_tables("_rekeyed")), *REKEYED_COPIES):
        db.execute(statement)
    for table in ROUND_ROWS:
        (orphans,) = db.execute(
            f"SELECT (SELECT COUNT(*) FROM {table}) - (SELECT COUNT(*) FROM {table}_rekeyed)"
        ).fetchone()
        if orphans:
            raise LedgerError(f"{path}: {orphans} of its {table} name no committed round; nothing was changed")
    for statement in REKEYED_SWAP:
        db.execute(statement)


# --- token-auction 0.1's files ----------------------------------------------------------------------
#
# A 0.1 ledger holds one market per file: its id, definition (the market's defining settings), feed
# seq and closing in ``meta``, and ``rounds``, ``bids``, ``payments``, ``sponsors`` keyed by round
# alone. Migrating makes that one market the exchange's default market, so ``serve --db FILE
# --prompt ...`` with the market's settings resumes it, and ``ledger`` and ``audit`` read it as before:
#
# - every row is copied, unchanged but for its market key; a round's stored ``round_result`` stays
#   the exact bytes that were broadcast; 0.1 stored commit times as Julian days, they become Unix
#   seconds;
# - what 0.1 did not record is filled in plainly: a round's opening time is its commit time, the
#   market opened at its first round's commit (or at migration, if it has none), its bids are not a
#   reference's, and the commit count is the number of rounds (0.1 committed each round alone);
# - resume secrets were not kept by 0.1: each agent's name is bound again by its next committed bid.
#
# A consistent copy of the original file is written first (SQLite's backup API, so a write-ahead
# log left by a killed 0.1 process is included), then everything happens in **one** transaction: a
# failure leaves the file as it was.

# Children before parents: a table is dropped only once nothing refers to it.
V1_TABLES = ("sponsors", "payments", "bids", "rounds")
V1_META = ("market_id", "definition", "seq", "closed")
UNIX_EPOCH_JULIAN_DAY = 2440587.5
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class Migration:
    """What a migration moved: the market (now the default market) and how many rows of each kind."""

    market: str
    rounds: int
    bids: int
    payments: int
    backup: Path


def default_backup(path: Path) -> Path:
    return path.with_name(path.name + ".0.1")


def migrate_v01(path: Path, backup: Path | None = None) -> Migration | None:
    """Migrate the 0.1 ledger at ``path`` in place, after copying it to ``backup`` (default
    ``FILE.0.1``). None if it already has this version's schema; :class:`LedgerError` with one line
    if it is not a ledger, holds no market, the copy exists already, or its market's settings are no
    longer valid (checked before anything is written)."""
    backup = backup or default_backup(path)
    if not path.is_file():
        raise LedgerError(f"no ledger at {path}")
    db = sqlite3.connect(path, isolation_level=None)
    try:
        if not written_by_v1(db):
            return None
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        market = meta.get("market_id")
        if not market or "definition" not in meta:
            raise LedgerError(f"{path} holds no market: there is nothing to migrate (start on a new --db)")
        settings = _v01_settings(meta["definition"])
        if backup.exists():
            raise LedgerError(f"{backup} exists; move it away or pass --backup PATH for the copy of the 0.1 ledger")
        with contextlib.closing(sqlite3.connect(backup)) as copy:
            db.backup(copy)
        try:
            rounds, bids, payments = _migrate_v01(db, market, settings, meta)
        except BaseException:
            backup.unlink()  # the ledger is as it was: a retry must not find a stale copy in its way
            raise
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"cannot migrate {path}: {exc}") from None
    finally:
        db.close()
    log.info("migrated %s: market %s, %d rounds (0.1 copy at %s)", path, market, rounds, backup)
    return Migration(market, rounds, bids, payments, backup)


def _migrate_v01(
    db: sqlite3.Connection, market: str, settings: MarketSettings, meta: dict[str, str]
) -> tuple[int, int, int]:
    """Everything in one transaction: the old tables renamed (their triggers dropped, or the new
    tables' triggers of the same names would not be created), the new schema, the rows, the meta."""
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("BEGIN IMMEDIATE")
    try:
        for table in V1_TABLES:
            db.execute(f"ALTER TABLE {table} RENAME TO v1_{table}")
        for (trigger,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f'DROP TRIGGER "{trigger}"')
        for statement in statements(SCHEMA):
            db.execute(statement)
        rounds, bids, payments = _copy_v01_rows(db, market, settings, meta)
        for statement in FILL_SPENT:
            db.execute(statement)
        for table in V1_TABLES:
            db.execute(f"DROP TABLE v1_{table}")
        db.execute(f"DELETE FROM meta WHERE key IN ({', '.join('?' * len(V1_META))})", V1_META)
        for key, value in (("schema", SCHEMA_VERSION), ("default_market", market), ("commits", str(rounds))):
            db.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (key, value))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return rounds, bids, payments


def _v01_settings(definition: str) -> MarketSettings:
    """The market's settings from 0.1's stored definition (JSON of its defining settings)."""
    try:
        return MarketSettings.model_validate_json(definition)
    except ValidationError as exc:
        reason = describe_validation_error(exc)
        raise LedgerError(f"the 0.1 market's settings are not valid in this version: {reason}") from None


def _copy_v01_rows(
    db: sqlite3.Connection, market: str, settings: MarketSettings, meta: dict[str, str]
) -> tuple[int, int, int]:
    """Every row into the new tables, keyed by ``market``: how many rounds, bids and payments."""
    unix = f"(committed_at - {UNIX_EPOCH_JULIAN_DAY}) * {SECONDS_PER_DAY}"
    first_commit = db.execute(f"SELECT MIN({unix}) FROM v1_rounds").fetchone()[0]
    definition = {"settings": settings.model_dump(mode="json"), "agents": None, "reference_agent": None}
    closed = bytes.fromhex(meta["closed"]) if "closed" in meta else None
    db.execute(
        "INSERT INTO markets(market, definition, opened_at, seq, closed) VALUES (?, ?, ?, ?, ?)",
        (market, json.dumps(definition, sort_keys=True), first_commit or time.time(), int(meta.get("seq", 0)), closed),
    )
    rounds = db.execute(
        "INSERT INTO rounds(market, round, token, seed, seed_commitment, result_seq, opened_at, committed_at, result)"
        f" SELECT ?, round, token, seed, seed_commitment, result_seq, {unix}, {unix}, result FROM v1_rounds"
        " ORDER BY round",
        (market,),
    ).rowcount
    for table in ("bids", "payments", "sponsors"):  # 0.1 never wrote one; a hand-edited file might
        orphans = db.execute(f"SELECT COUNT(*) FROM v1_{table} WHERE round NOT IN (SELECT round FROM v1_rounds)")
        if count := orphans.fetchone()[0]:
            raise sqlite3.IntegrityError(f"FOREIGN KEY constraint failed: {count} of the {table} name no round")
    # Each row joins its round's number in the new ledger (rounds are numbered in commit order).
    bids = db.execute(
        "INSERT INTO bids(round_id, agent, bid, tokens, probs, reference) SELECT id, agent, bid, tokens, probs, 0"
        " FROM v1_bids JOIN rounds USING (round) WHERE market = ? ORDER BY id, agent",
        (market,),
    ).rowcount
    payments = db.execute(
        "INSERT INTO payments(round_id, agent, amount) SELECT id, agent, amount FROM v1_payments"
        " JOIN rounds USING (round) WHERE market = ?",
        (market,),
    ).rowcount
    db.execute(
        "INSERT INTO sponsors(round_id, sponsor, share) SELECT id, sponsor, share FROM v1_sponsors"
        " JOIN rounds USING (round) WHERE market = ?",
        (market,),
    )
    return rounds, bids, payments

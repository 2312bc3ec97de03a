"""Bringing a ledger written by token-auction 0.1 to the exchange's schema (what ``auctioneer migrate`` runs).

A 0.1 ledger holds one market per file: its id, definition (the market's defining settings), feed
seq and closing in ``meta``, and ``rounds``, ``bids``, ``payments``, ``sponsors`` keyed by round
alone. The exchange's schema (:data:`auctioneer.ledger.SCHEMA`) keys every row by market. Migrating
makes that one market the exchange's default market, so ``serve --db FILE --prompt ...`` with the
market's settings resumes it, and ``ledger`` and ``audit`` read it as before:

- every row is copied, unchanged but for its market key; a round's stored ``round_result`` stays the
  exact bytes that were broadcast; 0.1 stored commit times as Julian days, they become Unix seconds;
- what 0.1 did not record is filled in plainly: a round's opening time is its commit time, the
  market opened at its first round's commit (or at migration, if it has none), its bids are not a
  reference's, and the commit count is the number of rounds (0.1 committed each round alone);
- resume secrets were not kept by 0.1: each agent's name is bound again by its next committed bid.

A consistent copy of the original file is written first (SQLite's backup API, so a write-ahead log
left by a killed 0.1 process is included), then everything happens in **one** transaction: a
failure leaves the file as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from auctioneer.ledger import FILL_SPENT, SCHEMA, SCHEMA_VERSION, LedgerError, statements, written_by_v1
from auctioneer.settings import MarketSettings
from protocol.errors import describe_validation_error

log = logging.getLogger(__name__)

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


def migrate(path: Path, backup: Path | None = None) -> Migration | None:
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
        settings = _settings(meta["definition"])
        if backup.exists():
            raise LedgerError(f"{backup} exists; move it away or pass --backup PATH for the copy of the 0.1 ledger")
        with contextlib.closing(sqlite3.connect(backup)) as copy:
            db.backup(copy)
        try:
            rounds, bids, payments = _migrate(db, market, settings, meta)
        except BaseException:
            backup.unlink()  # the ledger is as it was: a retry must not find a stale copy in its way
            raise
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"cannot migrate {path}: {exc}") from None
    finally:
        db.close()
    log.info("migrated %s: market %s, %d rounds (0.1 copy at %s)", path, market, rounds, backup)
    return Migration(market, rounds, bids, payments, backup)


def _migrate(
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
        rounds, bids, payments = _copy_rows(db, market, settings, meta)
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


def _settings(definition: str) -> MarketSettings:
    """The market's settings from 0.1's stored definition (JSON of its defining settings)."""
    try:
        return MarketSettings.model_validate_json(definition)
    except ValidationError as exc:
        reason = describe_validation_error(exc)
        raise LedgerError(f"the 0.1 market's settings are not valid in this version: {reason}") from None


def _copy_rows(
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

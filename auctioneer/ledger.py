"""The SQLite ledger: the market's durable record (WAL mode, one transaction per round).

Tables: ``meta`` (market definition, feed sequence, closing), ``rounds`` (one row per committed
round, with the exact ``round_result`` broadcast), ``bids`` and ``payments`` (one row per bidder per
round), ``sponsors`` (who pulled each round's token, by share). Rounds, bids, payments and sponsors
are append-only, enforced by triggers. Balances are not stored: they are the sum of payments.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from protocol import LIMITS, decode, encode
from protocol.messages import MarketClosed, Message, RoundResult

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    token TEXT,
    seed BLOB NOT NULL,
    seed_commitment TEXT NOT NULL,
    result_seq INTEGER NOT NULL UNIQUE,
    committed_at REAL NOT NULL,
    result BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS bids (
    round INTEGER NOT NULL REFERENCES rounds(round),
    agent TEXT NOT NULL,
    bid REAL NOT NULL,
    tokens BLOB NOT NULL,
    probs BLOB NOT NULL,
    PRIMARY KEY (round, agent)
);
CREATE TABLE IF NOT EXISTS payments (
    round INTEGER NOT NULL REFERENCES rounds(round),
    agent TEXT NOT NULL,
    amount REAL NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (round, agent)
);
CREATE TABLE IF NOT EXISTS sponsors (
    round INTEGER NOT NULL REFERENCES rounds(round),
    sponsor TEXT NOT NULL,
    share REAL NOT NULL CHECK (share > 0 AND share <= 1),
    PRIMARY KEY (round, sponsor)
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


class LedgerError(Exception):
    """The database cannot be used as this market's ledger."""


@dataclass(frozen=True)
class StoredBid:
    agent: str
    bid: float
    tokens: list[str]
    probs: np.ndarray

    def distribution(self) -> dict[str, float]:
        return dict(zip(self.tokens, self.probs.tolist(), strict=True))


@dataclass(frozen=True)
class StoredRound:
    round: int
    token: str | None
    seed: bytes
    seed_commitment: str
    bids: list[StoredBid]
    payments: dict[str, float]
    sponsors: dict[str, float]
    result: RoundResult


class Ledger:
    """One market's ledger in one SQLite file."""

    def __init__(self, path: Path, durable: bool = True) -> None:
        """``durable=False`` skips fsync (for simulations, where a crash just means running again)."""
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{path} is not a usable SQLite ledger: {exc}") from None

    @classmethod
    def open_existing(cls, path: Path) -> Ledger:
        """Open a ledger that must already hold a market (reading never creates one)."""
        if not path.is_file():
            raise LedgerError(f"no ledger at {path} (pass --db PATH of a market's database)")
        ledger = cls(path)
        if ledger.definition() is None:
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
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- meta -----------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def definition(self) -> dict[str, Any] | None:
        stored = self._meta("definition")
        return None if stored is None else dict(json.loads(stored))

    def market_id(self) -> str:
        return self._meta("market_id") or ""

    def create(self, market_id: str, definition: dict[str, Any]) -> None:
        with self._transaction() as db:
            self._set_meta(db, "market_id", market_id)
            self._set_meta(db, "definition", json.dumps(definition, sort_keys=True))
            self._set_meta(db, "seq", "0")

    def last_seq(self) -> int:
        return int(self._meta("seq") or 0)

    def closed(self) -> MarketClosed | None:
        stored = self._meta("closed")
        if stored is None:
            return None
        message = _stored_message(bytes.fromhex(stored))
        assert isinstance(message, MarketClosed)
        return message

    def record_closed(self, message: MarketClosed) -> None:
        with self._transaction() as db:
            self._set_meta(db, "closed", encode(message).hex())
            self._set_meta(db, "seq", str(max(self.last_seq(), message.seq)))

    # --- rounds ---------------------------------------------------------------------------

    def commit_round(self, result: RoundResult, seed: bytes, bids: Sequence[StoredBid]) -> None:
        """Write the round, its bids and payments, and the feed seq in one transaction."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO rounds(round, token, seed, seed_commitment, result_seq, committed_at, result)"
                " VALUES (?, ?, ?, ?, ?, julianday('now'), ?)",
                (result.round, result.token, seed, result.seed_commitment, result.seq, encode(result)),
            )
            db.executemany(
                "INSERT INTO bids(round, agent, bid, tokens, probs) VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        result.round,
                        b.agent,
                        b.bid,
                        msgpack.packb(list(b.tokens)),
                        np.ascontiguousarray(b.probs, dtype="<f8").tobytes(),
                    )
                    for b in bids
                ],
            )
            db.executemany(
                "INSERT INTO payments(round, agent, amount) VALUES (?, ?, ?)",
                [(result.round, agent, amount) for agent, amount in result.payments.items()],
            )
            db.executemany(
                "INSERT INTO sponsors(round, sponsor, share) VALUES (?, ?, ?)",
                [(result.round, sponsor, share) for sponsor, share in result.sponsors.items()],
            )
            self._set_meta(db, "seq", str(max(self.last_seq(), result.seq)))

    def last_round(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(round), 0) FROM rounds").fetchone()[0])

    def tokens(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT token FROM rounds WHERE token IS NOT NULL ORDER BY round")]

    def idle_streak(self) -> int:
        """How many of the latest rounds had no bid."""
        streak = 0
        for (token,) in self._db.execute("SELECT token FROM rounds ORDER BY round DESC"):
            if token is not None:
                break
            streak += 1
        return streak

    def balances(self) -> dict[str, float]:
        """Total paid per agent: the sum of its payments."""
        rows = self._db.execute("SELECT agent, SUM(amount) FROM payments GROUP BY agent ORDER BY agent")
        return {agent: float(total) for agent, total in rows}

    def results_since(self, seq: int, limit: int, max_bytes: int) -> tuple[list[RoundResult], bool]:
        """Stored ``round_result`` broadcasts with ``seq`` above ``seq``, oldest first, and whether more
        remain: at most ``limit`` of them and, past the first, at most ``max_bytes`` of them encoded."""
        results: list[RoundResult] = []
        size = 0
        rows = self._db.execute(
            "SELECT result FROM rounds WHERE result_seq > ? ORDER BY result_seq LIMIT ?", (seq, limit + 1)
        )
        for (data,) in rows:
            size += len(data)
            if len(results) == limit or (results and size > max_bytes):
                return results, True
            message = _stored_message(data)
            assert isinstance(message, RoundResult)
            results.append(message)
        return results, False

    def rounds(self) -> Iterator[StoredRound]:
        """Every committed round with its bids and payments, in order."""
        for number, token, seed, commitment, result in self._db.execute(
            "SELECT round, token, seed, seed_commitment, result FROM rounds ORDER BY round"
        ).fetchall():
            bids = [
                StoredBid(agent, bid, msgpack.unpackb(tokens), np.frombuffer(probs, dtype="<f8"))
                for agent, bid, tokens, probs in self._db.execute(
                    "SELECT agent, bid, tokens, probs FROM bids WHERE round = ? ORDER BY agent", (number,)
                )
            ]
            payments = dict(
                self._db.execute(
                    "SELECT agent, amount FROM payments WHERE round = ? ORDER BY agent", (number,)
                ).fetchall()
            )
            sponsors = dict(
                self._db.execute(
                    "SELECT sponsor, share FROM sponsors WHERE round = ? ORDER BY sponsor", (number,)
                ).fetchall()
            )
            message = _stored_message(result)
            assert isinstance(message, RoundResult)
            yield StoredRound(number, token, bytes(seed), commitment, bids, payments, sponsors, message)

    def document(self) -> dict[str, Any]:
        """The whole record as JSON-ready data (what ``auctioneer ledger --json`` prints)."""
        definition = self.definition() or {}
        rounds = []
        for stored in self.rounds():
            result = stored.result
            rounds.append(
                {
                    "round": stored.round,
                    "token": stored.token,
                    "distribution": result.distribution.as_mapping() if result.distribution else {},
                    "bids": {b.agent: {"bid": b.bid, "distribution": b.distribution()} for b in stored.bids},
                    "payments": stored.payments,
                    "sponsors": stored.sponsors,
                    "seed": stored.seed.hex(),
                    "seed_commitment": stored.seed_commitment,
                }
            )
        prompt = str(definition.get("prompt", ""))
        closed = self.closed()
        return {
            "market": self.market_id(),
            "prompt": prompt,
            "text": prompt + "".join(self.tokens()),
            "closed": closed.reason if closed else None,
            "settings": definition,
            "rounds": rounds,
            "balances": self.balances(),
        }


def _stored_message(data: bytes) -> Message:
    """A message this ledger wrote: trusted, so decoded without the network's size limits."""
    return decode(data, LIMITS.stored)

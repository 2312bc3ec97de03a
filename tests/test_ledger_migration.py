"""``auctioneer migrate`` on a ledger written by token-auction 0.1 itself.

``tests/data/ledger-0.1.db`` was written by 0.1's ``auctioneer demo --db FILE --payment critical_bid
--mode stable --max-tokens 8 --seed abab...ab`` (seven rounds, closed by its stop token), and
``ledger-0.1.json`` is what 0.1's ``auctioneer ledger --json`` printed for it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from auctioneer.ledger import written_by_v1
from tests.helpers import MarketRun, read_ledger, run_cli, static_agent

DATA = Path(__file__).parent / "data"
SETTINGS_01 = ["--prompt", "Mechanism Design for", "--payment", "critical_bid", "--mode", "stable", "--seed", "ab" * 32]


@pytest.fixture
def ledger_01(tmp_path: Path) -> Path:
    """A copy of the 0.1 ledger to migrate."""
    return Path(shutil.copy(DATA / "ledger-0.1.db", tmp_path / "market.db"))


ROUND_FIELDS_01 = ("round", "token", "distribution", "bids", "payments", "sponsors", "seed", "seed_commitment")


def as_01_printed(document: dict[str, Any]) -> dict[str, Any]:
    """What 0.1 printed of a ledger document: its market, text and every round's fields."""
    rounds = [{key: r[key] for key in ROUND_FIELDS_01} for r in document["rounds"]]
    return {key: document[key] for key in ("market", "prompt", "text", "closed")} | {"rounds": rounds}


def sql(path: Path) -> contextlib.closing[sqlite3.Connection]:
    """A connection to ``path`` in autocommit mode, closed at the end of the ``with`` block."""
    return contextlib.closing(sqlite3.connect(path, isolation_level=None))


def v1_rounds(path: Path) -> int:
    with sql(path) as db:
        assert written_by_v1(db)
        return int(db.execute("SELECT COUNT(*) FROM rounds").fetchone()[0])


def migrate(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("-m", "auctioneer", "migrate", "--db", str(path), *extra)


def test_migration_keeps_every_round_and_the_audit_passes(ledger_01: Path) -> None:
    printed_by_01 = json.loads((DATA / "ledger-0.1.json").read_text())
    migrated = migrate(ledger_01)
    assert migrated.returncode == 0, migrated.stderr
    assert "7 rounds, 21 bids, 21 payments" in " ".join(migrated.stdout.split())
    with sql(ledger_01) as db, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE payments SET amount = 0")  # the migrated rows are guarded as new ones are

    document = read_ledger(ledger_01)
    assert as_01_printed(document) == as_01_printed(printed_by_01)
    assert {k: document["settings"][k] for k in printed_by_01["settings"]} == printed_by_01["settings"]
    assert document["balances"] == {a: paid for a, paid in printed_by_01["balances"].items() if paid > 0}
    audit = run_cli("-m", "auctioneer", "audit", "--db", str(ledger_01))
    assert audit.returncode == 0 and "7 rounds verified" in audit.stdout, audit.stdout
    assert v1_rounds(ledger_01.with_name("market.db.0.1")) == 7  # the copy taken first is the 0.1 file

    again = migrate(ledger_01)
    assert again.returncode == 0 and "nothing to migrate" in again.stdout
    assert read_ledger(ledger_01) == document


def test_reading_a_01_ledger_names_the_migration(ledger_01: Path) -> None:
    shown = run_cli("-m", "auctioneer", "ledger", "--db", str(ledger_01))
    assert shown.returncode == 2 and shown.stdout == ""
    assert "was written by token-auction 0.1" in shown.stderr and f"auctioneer migrate --db {ledger_01}" in shown.stderr
    assert "Traceback" not in shown.stderr
    assert v1_rounds(ledger_01) == 7


def test_a_migration_that_fails_leaves_the_file_as_it_was(ledger_01: Path) -> None:
    # A payment for a round that does not exist (0.1 never wrote one; a hand-edited file might):
    # the exchange's schema refuses it, halfway through the copy.
    with sql(ledger_01) as db:
        db.execute("INSERT INTO payments(round, agent, amount) VALUES (99, 'mallory', 1.0)")
    failed = migrate(ledger_01)
    assert failed.returncode == 2 and "cannot migrate" in failed.stderr and "FOREIGN KEY" in failed.stderr
    assert v1_rounds(ledger_01) == 7
    assert not ledger_01.with_name("market.db.0.1").exists()  # no stale copy in the way of a retry


@pytest.mark.parametrize(
    ("edit", "refusal"),
    [
        ("UPDATE meta SET value = '{\"payment\": \"vickrey\"}' WHERE key = 'definition'", "not valid in this version"),
        ("UPDATE meta SET value = '{not json' WHERE key = 'definition'", "not valid in this version"),
        ("DELETE FROM meta WHERE key = 'market_id'", "holds no market"),
        (None, "kept.db exists"),
    ],
)
def test_refused_migrations_write_nothing(ledger_01: Path, tmp_path: Path, edit: str | None, refusal: str) -> None:
    kept = tmp_path / "kept.db"
    if edit is None:
        kept.write_bytes(b"someone's file")
    else:
        with sql(ledger_01) as db:
            db.execute(edit)
    refused = migrate(ledger_01, "--backup", str(kept))
    assert refused.returncode == 2 and refusal in refused.stderr and "Traceback" not in refused.stderr
    assert v1_rounds(ledger_01) == 7
    assert (kept.read_bytes() == b"someone's file") if edit is None else not kept.exists()


def test_a_migrated_market_resumes_where_01_stopped(market_run: MarketRun) -> None:
    shutil.copy(DATA / "ledger-0.1.db", market_run.db)
    with sql(market_run.db) as db:  # as if 0.1 had been stopped before the market ended
        db.execute("DELETE FROM meta WHERE key = 'closed'")
    assert migrate(market_run.db).returncode == 0
    before = read_ledger(market_run.db)

    market_run.serve(*SETTINGS_01, "--max-tokens", "9")
    agent = market_run.agent("alice", *static_agent(" resumed=1.0", 1.0))
    assert agent.wait(60) == 0, market_run.logs()
    assert market_run.processes[0].wait(30) == 0, market_run.logs()

    after = read_ledger(market_run.db)
    assert after["rounds"][:7] == before["rounds"]
    assert [(r["round"], r["token"]) for r in after["rounds"][7:]] == [(8, " resumed"), (9, " resumed")]
    assert after["text"] == before["text"] + " resumed resumed" and after["closed"] == "max_tokens"
    audit = run_cli("-m", "auctioneer", "audit", "--db", str(market_run.db))
    assert audit.returncode == 0, audit.stdout

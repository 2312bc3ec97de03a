"""The PostgreSQL ledger's layout: ``postgres_schema.sql``, the append-only triggers generated
from the same list as the SQLite ledger's (:data:`auctioneer.ledger.rows.APPEND_ONLY`), and the
triggers that check a bid's, payment's or sponsor's round exists.

:func:`prepare` applies them in one transaction under an advisory lock, so shards starting together
on an empty database do not race; it is idempotent, and refuses a database a later version wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from auctioneer.ledger.records import LedgerError
from auctioneer.ledger.rows import APPEND_ONLY

SCHEMA_VERSION = "1"
SCHEMA_LOCK = 7_120_401  # the advisory lock key the schema is applied under
TABLES = Path(__file__).with_name("postgres_schema.sql")
APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% are append-only', TG_TABLE_NAME;
END
$$ LANGUAGE plpgsql
"""


def append_only_triggers(tables: tuple[str, ...] = APPEND_ONLY) -> list[str]:
    """One trigger per table against UPDATE and DELETE (and TRUNCATE) of its rows."""
    statements = []
    for table in tables:
        statements += [
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION append_only()",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT"
            " EXECUTE FUNCTION append_only()",
        ]
    return statements


# Each row of these tables names its round (``round_id``). A foreign key would check that with one
# query per inserted row, which costs PostgreSQL more than the insert itself (a round has eight such
# rows); rounds can never be deleted or changed (append-only), so what a foreign key guards here is
# the insert alone, and a trigger checks each statement's new rows against ``rounds`` in one join.
ROUND_CHILDREN = ("bids", "payments", "sponsors")
NAMES_A_ROUND_FUNCTION = """
CREATE OR REPLACE FUNCTION names_a_round() RETURNS trigger AS $$
DECLARE
    orphan BIGINT;
BEGIN
    SELECT n.round_id INTO orphan FROM new_rows n LEFT JOIN rounds r ON r.id = n.round_id
    WHERE r.id IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a row of % names round %, which does not exist', TG_TABLE_NAME, orphan
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""


def names_a_round_triggers(tables: tuple[str, ...] = ROUND_CHILDREN) -> list[str]:
    """Per table: the statement trigger that checks its new rows' rounds exist, in place of the
    foreign key an earlier layout had."""
    statements = []
    for table in tables:
        statements += [
            f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {table}_round_id_fkey",
            f"DROP TRIGGER IF EXISTS {table}_names_a_round ON {table}",
            f"CREATE TRIGGER {table}_names_a_round AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows"
            " FOR EACH STATEMENT EXECUTE FUNCTION names_a_round()",
        ]
    return statements


def prepare(conn: psycopg.Connection[Any]) -> None:
    """Give the database this version's layout (``conn`` in autocommit mode)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(TABLES.read_text(encoding="utf-8"))
        stored = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if stored is not None and stored[0].isdigit() and int(stored[0]) > int(SCHEMA_VERSION):
            raise LedgerError(
                f"the database was written by a newer token-auction (ledger schema {stored[0]}, this one reads "
                f"{SCHEMA_VERSION}): upgrade token-auction to use it"
            )
        conn.execute(APPEND_ONLY_FUNCTION)
        conn.execute(NAMES_A_ROUND_FUNCTION)
        for statement in append_only_triggers() + names_a_round_triggers():
            conn.execute(statement)
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('schema', %s) ON CONFLICT (key) DO NOTHING", (SCHEMA_VERSION,)
        )

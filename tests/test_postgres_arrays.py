"""The PostgreSQL store's bulk array columns (``auctioneer.ledger.postgres_arrays``) against a real
server: whatever a column holds comes back from PostgreSQL as it went in, as psycopg's own
element-by-element dumping would have sent it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auctioneer.ledger.postgres_arrays import ARRAY_TYPES, column, register

TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")  # what PostgreSQL text holds
VALUES = {
    "bigint": st.integers(-(2**63), 2**63 - 1),
    "integer": st.integers(-(2**31), 2**31 - 1),
    "float8": st.floats(allow_nan=False),
    "text": st.one_of(st.none(), st.text(alphabet=TEXT)),
    "bytea": st.binary(),
}


@pytest.fixture
def conn(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        register(connection.adapters)
        yield connection


def test_every_array_type_has_values_to_try() -> None:
    assert set(VALUES) == set(ARRAY_TYPES)


@pytest.mark.parametrize("kind", list(ARRAY_TYPES))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_column_reaches_postgresql_as_it_was(conn: psycopg.Connection[Any], kind: str, data: st.DataObject) -> None:
    values = data.draw(st.lists(VALUES[kind], max_size=20))
    sent, plain = conn.execute(f"SELECT %b::{kind}[], %b::{kind}[]", (column(kind, values), values)).fetchone()
    assert sent == plain == values


def test_a_tick_of_columns_inserts_the_rows_unnest_gives(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TEMPORARY TABLE t (id bigint, name text, share float8, blob bytea)")
    ids, names, shares, blobs = [7, 8, 9], ["a", None, "ü"], [0.25, 1.0, 1e-300], [b"\x00", b"", b"xyz"]
    conn.execute(
        "INSERT INTO t SELECT * FROM unnest(%b::bigint[], %b::text[], %b::float8[], %b::bytea[])",
        (column("bigint", ids), column("text", names), column("float8", shares), column("bytea", blobs)),
    )
    assert conn.execute("SELECT * FROM t ORDER BY id").fetchall() == list(zip(ids, names, shares, blobs, strict=True))

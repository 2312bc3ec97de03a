"""One tick's commit in PostgreSQL: the statements of the transaction, and the order they run in.

A tick's commit is one pipelined transaction, the server waited for twice (for the fence and the
round ids), then for the commit, whatever the number of rounds and markets in it:

1. the **fence**: the lease rows of the tick's markets, locked; a market whose lease another shard
   holds now (another owner, or a later epoch) fails the whole transaction (:class:`FencedOut`);
2. the rounds' ids from the sequence, then every round, bid, payment and sponsor row of the tick,
   one set-based statement per table (``unnest`` of one array per column: far less work for the
   server than a statement per row; each array sent whole, ``postgres_arrays``);
3. the accounts: each agent's payments added to what it spent and taken out of this shard's slice
   of its budget, so ``spent + leased`` moves only by what was paid beyond the slice (rows locked
   account first, then slices, as every writer of both does: no deadlock between shards);
4. name bindings, the markets that ended (their leases dropped), accounts first seen, and this
   shard's notice seq.

The statements are a *plan* (:func:`tick_plan`, a generator of :class:`Send` and :class:`Fetch`
steps) that decides nothing about I/O: :func:`run_plan` runs it on a blocking connection, and
:func:`run_plan_async` on an asynchronous one, so the exchange's event loop goes on answering bids
while the server works.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from auctioneer.ledger.postgres_arrays import Column, column
from auctioneer.ledger.records import FencedOut, RoundRecord, TickWrite
from auctioneer.ledger.rows import ROUND_ROW_COLUMNS, round_rows
from protocol import encode

COLUMN_TYPES = {
    "rounds": ("bigint", "text", "bigint", "text", "bytea", "text", "bigint", "float8", "float8", "bytea"),
    "bids": ("bigint", "text", "float8", "bytea", "bytea", "integer"),
    "payments": ("bigint", "text", "float8"),
    "sponsors": ("bigint", "text", "float8"),
}
INSERTS = tuple(
    f"INSERT INTO {table}({', '.join(columns)}) SELECT * FROM unnest("
    + ", ".join(f"%b::{kind}[]" for kind in COLUMN_TYPES[table])
    + ")"
    for table, columns in ROUND_ROW_COLUMNS
)
FENCE = "SELECT market, owner, epoch FROM leases WHERE market = ANY(%s) ORDER BY market FOR UPDATE"
ROUND_IDS = "SELECT nextval('round_ids') FROM generate_series(1, %s)"
COUNT_COMMIT = (
    "INSERT INTO meta(key, value) VALUES ('commits', '1') ON CONFLICT (key)"
    " DO UPDATE SET value = (meta.value::bigint + 1)::text"
)
BIND_AGENTS = (
    "INSERT INTO agents(agent, secret_hash, bound_at) SELECT * FROM unnest(%b::text[], %b::text[], %b::float8[])"
    " ON CONFLICT DO NOTHING"
)
CLOSE_MARKETS = (
    "UPDATE markets SET closed = ended.closed, seq = GREATEST(markets.seq, ended.seq)"
    " FROM unnest(%b::text[], %b::bytea[], %b::bigint[]) AS ended(market, closed, seq)"
    " WHERE markets.market = ended.market"
)
OPEN_ACCOUNTS = (
    "INSERT INTO accounts(agent, budget) SELECT * FROM unnest(%b::text[], %b::float8[]) ON CONFLICT (agent) DO NOTHING"
)
LOCK_ACCOUNTS = "SELECT 1 FROM accounts WHERE agent = ANY(%b::text[]) ORDER BY agent FOR UPDATE"
# A commit's payments, per agent: added to what it spent, and taken out of this shard's slice of its
# budget as far as the slice goes (so spent + leased moves by what was paid beyond the slice, if any).
SETTLE = """
WITH paid(agent, amount) AS (SELECT * FROM unnest(%(agents)s::text[], %(amounts)s::float8[])),
held AS (
    SELECT s.agent, LEAST(s.amount, paid.amount) AS taken FROM slices s JOIN paid USING (agent)
    WHERE s.shard = %(shard)s FOR UPDATE OF s
),
sliced AS (
    UPDATE slices s SET amount = s.amount - held.taken FROM held
    WHERE s.agent = held.agent AND s.shard = %(shard)s AND held.taken > 0
)
INSERT INTO accounts(agent, spent) SELECT agent, amount FROM paid ON CONFLICT (agent) DO UPDATE
SET spent = accounts.spent + excluded.spent,
    leased = accounts.leased - COALESCE((SELECT taken FROM held WHERE held.agent = excluded.agent), 0)
"""


@dataclass(frozen=True)
class Send:
    """A step of a plan: send one statement (the plan is handed back the cursor it runs on)."""

    query: str
    params: Any = ()


@dataclass(frozen=True)
class Fetch:
    """A step of a plan: wait for a statement's rows (the plan is handed back the rows)."""

    cursor: Any


Plan = Generator[Send | Fetch, Any, None]


def run_plan(conn: psycopg.Connection[Any], plan: Plan) -> None:
    """Run ``plan`` on ``conn`` (in its open transaction and pipeline), blocking on each round trip."""
    try:
        step = next(plan)
        while True:
            reply = conn.execute(step.query, step.params) if isinstance(step, Send) else step.cursor.fetchall()
            step = plan.send(reply)
    except StopIteration:
        pass


async def run_plan_async(conn: psycopg.AsyncConnection[Any], plan: Plan) -> None:
    """Run ``plan`` on ``conn``, the event loop free while the server works."""
    try:
        step = next(plan)
        while True:
            if isinstance(step, Send):
                step = plan.send(await conn.execute(step.query, step.params))
            else:
                step = plan.send(await step.cursor.fetchall())
    except StopIteration:
        pass


def tick_plan(shard: str, tick: TickWrite) -> Plan:
    """The statements of ``tick``'s commit, for a driver to run (:func:`run_plan`, :func:`run_plan_async`)."""
    fence = tick.fence
    held = (yield Send(FENCE, (sorted(fence),))) if fence else None
    ids = (yield Send(ROUND_IDS, (len(tick.rounds),))) if tick.rounds else None
    if held is not None and fence is not None:
        check_fence((yield Fetch(held)), fence, shard)
    if ids is not None:
        numbered = [row[0] for row in (yield Fetch(ids))]
        tables = round_rows(tick.rounds, tick.committed_at, 0)
        for statement, (table, _), rows in zip(INSERTS, ROUND_ROW_COLUMNS, tables, strict=True):
            if rows:
                yield Send(statement, round_columns(table, rows, numbered))
        yield from settle_payments(tick.rounds, shard)
        yield Send(COUNT_COMMIT)
    if tick.bindings:
        bound = [(agent, secret_hash, tick.committed_at) for agent, secret_hash in tick.bindings.items()]
        yield Send(BIND_AGENTS, columns_of(bound))
    if tick.closings:
        ended = [(closing.market, encode(closing), closing.seq) for closing in tick.closings]
        yield Send(CLOSE_MARKETS, columns_of(ended))
        yield Send("DELETE FROM leases WHERE market = ANY(%s)", ([closing.market for closing in tick.closings],))
    if tick.accounts:
        yield Send(OPEN_ACCOUNTS, columns_of([(agent, state.budget) for agent, state in tick.accounts.items()]))
    if tick.exchange_seq is not None:
        yield Send("UPDATE shards SET exchange_seq = %s WHERE shard = %s", (tick.exchange_seq, shard))


def check_fence(held: Sequence[tuple[Any, ...]], fence: Mapping[str, int], shard: str) -> None:
    """Refuse the tick unless ``shard`` still holds every fenced market's lease at its epoch."""
    owned = {market for market, owner, epoch in held if owner == shard and epoch == fence[market]}
    lost = set(fence) - owned
    if lost:
        raise FencedOut(lost)


def settle_payments(rounds: Sequence[RoundRecord], shard: str) -> Plan:
    """Each agent's payments: added to what it spent, and taken from what ``shard`` holds of its
    budget (its slice), so ``spent + leased`` does not move."""
    paid: dict[str, float] = defaultdict(float)
    for record in rounds:
        for agent, amount in record.result.payments.items():
            paid[agent] += amount
    charged = sorted((agent, amount) for agent, amount in paid.items() if amount > 0)
    if charged:
        agents, amounts = columns_of(charged)
        yield Send(LOCK_ACCOUNTS, (agents,))  # accounts before slices, as every writer of both
        yield Send(SETTLE, {"agents": list(agents), "amounts": list(amounts), "shard": shard})


def round_columns(table: str, rows: Sequence[tuple[Any, ...]], ids: Sequence[int]) -> list[Column]:
    """The rows of ``table`` from :func:`round_rows` (rounds numbered from 0) as typed columns, each
    round's number replaced by its id from the sequence."""
    first, *rest = zip(*rows, strict=True)
    values = [[ids[number] for number in first], *rest]
    return [column(kind, column_values) for kind, column_values in zip(COLUMN_TYPES[table], values, strict=True)]


def columns_of(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """``rows`` as one list per column (the arrays a set-based statement unnests)."""
    return [list(column) for column in zip(*rows, strict=True)]

"""The PostgreSQL store: an exchange's ledger in a database server, shared by every shard of it.

The same record as the SQLite store (the same tables, rows and guarantees: append-only rounds, bids,
payments and sponsors by trigger, a tick's rounds with their accounts in one transaction, committed
before anything is broadcast), through psycopg 3's connection pool. What a store shared by several
auctioneer processes adds:

- **fencing**: a commit names the markets it writes with the lease epoch its shard holds for each
  (``fence``); in the same transaction the leases are locked and checked, and if another shard has
  taken one, nothing is written and :class:`~auctioneer.ledger.records.FencedOut` names the markets
  lost. A shard paused past its lease can therefore never write again once another took over;
- **accounts by deltas**: a commit adds its rounds' payments to each agent's ``spent`` and takes
  them from what the shard holds of the budget (its slice, ``auctioneer.shards``), so shards never
  overwrite each other's figures, and ``spent + leased <= budget`` is a constraint of the table;
- **notice seqs per shard**: each shard's feed numbers its own notices (the ``shards`` table).

The statements of a tick's commit are in :mod:`auctioneer.ledger.postgres_commit`, and how they run
(blocking, or awaited on the event loop, and retried while the server is away) in
:mod:`auctioneer.ledger.postgres_committer`. Every psycopg failure is a :class:`LedgerError` with
one line saying why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from auctioneer.ledger.export import Exports
from auctioneer.ledger.postgres_arrays import register as register_columns
from auctioneer.ledger.postgres_committer import TickCommitter
from auctioneer.ledger.postgres_schema import prepare
from auctioneer.ledger.records import (
    AccountState,
    FencedOut,
    LedgerError,
    StoredMarket,
    StoredRound,
    TickWrite,
    first_line,
)
from auctioneer.ledger.rows import (
    page_of_results,
    stored_bid,
    stored_market,
    stored_result,
)
from auctioneer.ledger.store import ClosingStore

MARKET_COLUMNS = "SELECT market, definition, opened_at, seq, closed FROM markets"
CONNECT_TIMEOUT = 5.0
DEFAULT_SHARD = "main"
SHARD_APPLICATION = "token-auction shard "  # + its name: the application_name of a serving shard's sessions


def is_postgres_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", "@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresLedger(Exports, ClosingStore):
    """An exchange's ledger in PostgreSQL, as one shard (``shard``) of it sees it."""

    def __init__(
        self,
        url: str,
        shard: str = DEFAULT_SHARD,
        lease_seconds: float = 2.0,
        pool_size: int = 4,
        serving: bool = False,
    ) -> None:
        """``serving``: this process serves as ``shard`` (its sessions are named after it, so that the
        other shards can end them if it stops renewing its leases, ``auctioneer.shards``)."""
        self.url = url
        self.shard = shard
        self.lease_seconds = lease_seconds
        self.on_commit: Callable[[float], None] | None = None
        # A shard stopped inside a transaction (SIGSTOP, a pause) would hold its row locks, and with
        # them its leases, for ever: the server ends such a session once the lease has run out.
        idle_ms = max(1000, int(lease_seconds * 1000))
        options = f"-c idle_in_transaction_session_timeout={idle_ms}"
        connect = {
            "autocommit": True,
            "connect_timeout": CONNECT_TIMEOUT,
            "options": options,
            "application_name": SHARD_APPLICATION + shard if serving else "token-auction",
        }
        try:
            self._pool = ConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                kwargs=connect,
                timeout=CONNECT_TIMEOUT,
                open=False,
                name=f"ledger-{shard}",
                configure=lambda conn: register_columns(conn.adapters),
            )
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except (psycopg.Error, PoolTimeout) as exc:
            raise LedgerError(f"cannot reach the ledger {self.location}: {first_line(exc)}") from None
        with self._failing("prepare"), self._pool.connection() as conn:
            prepare(conn)
            conn.execute(
                "INSERT INTO shards(shard, market_endpoint, feed_endpoint, alive_until) VALUES (%s, '', '', 0)"
                " ON CONFLICT (shard) DO NOTHING",
                (shard,),
            )
        self._commits = TickCommitter(self._pool, shard, self.location, {"conninfo": url, **connect})

    @classmethod
    def open_existing(cls, url: str) -> PostgresLedger:
        return cls(url).holding_a_market()

    @property
    def location(self) -> str:
        return without_password(self.url)

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _failing(self, doing: str) -> Iterator[None]:
        """psycopg's failures as one :class:`LedgerError` line (a fence is not a failure)."""
        try:
            yield
        except FencedOut:
            raise
        except psycopg.Error as exc:
            raise LedgerError(f"cannot {doing} the ledger {self.location}: {first_line(exc)}") from None
        except PoolTimeout as exc:
            raise LedgerError(f"cannot reach the ledger {self.location}: {first_line(exc)}") from None

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._failing("read"), self._pool.connection() as conn:
            return conn.execute(query, params).fetchall()

    def _value(self, query: str, params: Sequence[Any] = ()) -> Any:
        rows = self._rows(query, params)
        return rows[0][0] if rows else None

    # --- the exchange ---------------------------------------------------------------------

    def exchange_seq(self) -> int:
        return int(self._value("SELECT exchange_seq FROM shards WHERE shard = %s", (self.shard,)) or 0)

    def commits(self) -> int:
        return int(self._value("SELECT value FROM meta WHERE key = 'commits'") or 0)

    def default_market(self) -> str | None:
        value = self._value("SELECT value FROM meta WHERE key = 'default_market'")
        return None if value is None else str(value)

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
        """Record a new market, owned by ``owner`` (this shard by default) from now on."""
        try:
            with self._failing("write"), self._pool.connection() as conn, conn.transaction():
                conn.execute(
                    "INSERT INTO markets(market, definition, opened_at) VALUES (%s, %s, %s)",
                    (market, json.dumps(definition, sort_keys=True), opened_at),
                )
                conn.execute(
                    "INSERT INTO leases(market, owner, epoch, expires_at) VALUES (%s, %s, 1, "
                    "extract(epoch from clock_timestamp()) + %s)",
                    (market, owner or self.shard, self.lease_seconds),
                )
                conn.execute("UPDATE shards SET exchange_seq = %s WHERE shard = %s", (exchange_seq, self.shard))
                if default:
                    set_meta(conn, "default_market", market)
        except LedgerError as exc:
            if "duplicate key" in str(exc):
                raise LedgerError(f"a market {market!r} already exists in {self.location}") from None
            raise

    def update_definition(self, market: str, definition: dict[str, Any]) -> None:
        with self._failing("write"), self._pool.connection() as conn:
            conn.execute(
                "UPDATE markets SET definition = %s WHERE market = %s", (json.dumps(definition, sort_keys=True), market)
            )

    def market_ids(self) -> list[str]:
        return [row[0] for row in self._rows("SELECT market FROM markets ORDER BY opened_at, market")]

    def market_count(self) -> int:
        return int(self._value("SELECT COUNT(*) FROM markets") or 0)

    def has_market(self, market: str) -> bool:
        return self._value("SELECT 1 FROM markets WHERE market = %s", (market,)) is not None

    def market(self, market: str) -> StoredMarket | None:
        markets = self._stored_markets(MARKET_COLUMNS + " WHERE market = %s", (market,))
        return markets[0] if markets else None

    def markets(self, open_only: bool = False) -> list[StoredMarket]:
        query = MARKET_COLUMNS + (" WHERE closed IS NULL" if open_only else "") + " ORDER BY opened_at, market"
        return self._stored_markets(query)

    def latest_markets(self, limit: int, ended_only: bool = False) -> list[StoredMarket]:
        query = (
            MARKET_COLUMNS
            + (" WHERE closed IS NOT NULL" if ended_only else "")
            + " ORDER BY opened_at DESC, market DESC LIMIT %s"
        )
        return list(reversed(self._stored_markets(query, (limit,))))

    def _stored_markets(self, query: str, params: Sequence[Any] = ()) -> list[StoredMarket]:
        with self._failing("read"), self._pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
            markets = []
            for row in rows:
                rounds = conn.execute(
                    "SELECT round, token, result_seq FROM rounds WHERE market = %s ORDER BY round", (row[0],)
                ).fetchall()
                markets.append(stored_market(row, rounds, self._balances(conn, row[0])))
            return markets

    # --- rounds ---------------------------------------------------------------------------

    def commit(self, tick: TickWrite) -> None:
        """As the SQLite store's, fenced by ``tick.fence`` (market -> the epoch this shard holds).
        Accounts are kept by deltas: each round's payments are added to ``spent`` and taken from this
        shard's slices; of ``tick.accounts`` only what the agents' open bids reserve here is written."""
        self._committed(self._commits.commit(tick))

    async def commit_async(self, tick: TickWrite) -> None:
        """:meth:`commit` on a connection of the running event loop, which goes on with its other
        work during the round trips (no second thread holds the interpreter meanwhile)."""
        self._committed(await self._commits.commit_async(tick))

    async def close_async_commits(self) -> None:
        await self._commits.close_async()

    def _committed(self, seconds: float) -> None:
        if self.on_commit is not None:
            self.on_commit(seconds)

    def results_since(self, market: str, seq: int, limit: int, max_bytes: int) -> tuple[list[bytes], bool]:
        rows = self._rows(
            "SELECT result FROM rounds WHERE market = %s AND result_seq > %s ORDER BY result_seq LIMIT %s",
            (market, seq, limit + 1),
        )
        return page_of_results((data for (data,) in rows), limit, max_bytes)

    def rounds(self, market: str) -> Iterator[StoredRound]:
        # A server-side cursor: rounds stream, whatever their number.
        with self._failing("read"), self._pool.connection() as conn, conn.transaction():
            cursor = conn.cursor(name=f"rounds-{market}")
            cursor.execute(
                "SELECT id, round, token, seed, seed_commitment, result, opened_at, committed_at FROM rounds"
                " WHERE market = %s ORDER BY round",
                (market,),
            )
            for key, number, token, seed, commitment, result, opened_at, committed_at in cursor:
                bids = conn.execute(
                    "SELECT agent, bid, tokens, probs, reference FROM bids WHERE round_id = %s ORDER BY agent", (key,)
                ).fetchall()
                yield StoredRound(
                    market,
                    number,
                    token,
                    bytes(seed),
                    commitment,
                    [stored_bid(*row) for row in bids],
                    pairs(conn, "SELECT agent, amount FROM payments WHERE round_id = %s ORDER BY agent", key),
                    pairs(conn, "SELECT sponsor, share FROM sponsors WHERE round_id = %s ORDER BY sponsor", key),
                    stored_result(result),
                    opened_at,
                    committed_at,
                )

    def round_count(self) -> int:
        return int(self._value("SELECT COUNT(*) FROM rounds") or 0)

    def commit_rate(self) -> float:
        count, first, last = self._rows("SELECT COUNT(*), MIN(committed_at), MAX(committed_at) FROM rounds")[0]
        return count / (last - first) if count and last > first else float("nan")

    def balances(self, market: str) -> dict[str, float]:
        with self._failing("read"), self._pool.connection() as conn:
            return self._balances(conn, market)

    @staticmethod
    def _balances(conn: psycopg.Connection[Any], market: str) -> dict[str, float]:
        rows = conn.execute(
            "SELECT agent, SUM(amount) FROM rounds JOIN payments ON round_id = id WHERE market = %s"
            " GROUP BY agent HAVING SUM(amount) > 0 ORDER BY agent",
            (market,),
        )
        return {agent: float(total) for agent, total in rows}

    # --- agents and their accounts --------------------------------------------------------

    def accounts(self) -> dict[str, AccountState]:
        rows = self._rows(
            "SELECT a.agent, a.budget, COALESCE(SUM(s.amount), 0), a.spent FROM accounts AS a"
            " LEFT JOIN slices AS s USING (agent) GROUP BY a.agent, a.budget, a.spent ORDER BY a.agent"
        )
        # What a shard holds of an agent's budget is what its open bids may use: shown as reserved.
        return {agent: AccountState(budget, float(held), float(spent)) for agent, budget, held, spent in rows}

    def spent(self) -> dict[str, float]:
        rows = self._rows("SELECT agent, SUM(amount) FROM payments GROUP BY agent ORDER BY agent")
        return {agent: float(total) for agent, total in rows}

    def set_budget(self, agent: str, account: AccountState, set_at: float) -> None:
        """The operator's budget, refused (``LedgerError``) if below what the agent spent and what
        shards hold of its budget now."""
        with self._failing("write"), self._pool.connection() as conn, conn.transaction():
            conn.execute("INSERT INTO accounts(agent) VALUES (%s) ON CONFLICT (agent) DO NOTHING", (agent,))
            changed = conn.execute(
                "UPDATE accounts SET budget = %s WHERE agent = %s AND (%s::double precision IS NULL OR spent + leased"
                " <= %s) RETURNING agent",
                (account.budget, agent, account.budget, account.budget),
            ).fetchone()
            if changed is None:
                raise LedgerError(f"the budget of {agent} cannot fall below what it spent and what shards hold of it")
            conn.execute(
                "INSERT INTO budgets(agent, budget, set_at) VALUES (%s, %s, %s) ON CONFLICT (agent)"
                " DO UPDATE SET budget = excluded.budget, set_at = excluded.set_at",
                (agent, account.budget, set_at),
            )

    def operator_budgets(self) -> dict[str, float | None]:
        return {str(agent): budget for agent, budget in self._rows("SELECT agent, budget FROM budgets ORDER BY agent")}

    def binding(self, agent: str) -> str | None:
        value = self._value("SELECT secret_hash FROM agents WHERE agent = %s", (agent,))
        return None if value is None else str(value)

    # --- for the shards (auctioneer.shards) ---------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the pool, its failures as :class:`LedgerError`."""
        with self._failing("use"), self._pool.connection() as conn:
            yield conn


def pairs(conn: psycopg.Connection[Any], query: str, round_id: int) -> dict[str, float]:
    return {name: float(value) for name, value in conn.execute(query, (round_id,))}


def set_meta(conn: psycopg.Connection[Any], key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )

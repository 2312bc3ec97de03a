"""A shard's tick commits in PostgreSQL, and what they do when the server goes away.

A tick's commit (its statements are :func:`~auctioneer.ledger.postgres_commit.tick_plan`) runs
either on the store's blocking pool (:meth:`TickCommitter.commit`: commits made outside a tick, such
as an operator's close) or on one asynchronous connection of the running event loop
(:meth:`TickCommitter.commit_async`: every tick), which goes on answering requests during the round
trips. Either way a commit that finds the server unreachable or restarting waits for it, doubling
its pause up to a second, and gives up with a :class:`LedgerError` after ``RECONNECT_SECONDS``
(nothing is broadcast meanwhile); a commit whose connection broke as it committed may have
committed, and is not done twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from auctioneer.ledger.postgres_arrays import register as register_columns
from auctioneer.ledger.postgres_commit import run_plan, run_plan_async, tick_plan
from auctioneer.ledger.records import FencedOut, LedgerError, RoundRecord, TickWrite, first_line

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 60.0  # how long a commit waits for an unreachable server before the shard stops
HAS_ROUND = "SELECT 1 FROM rounds WHERE market = %s AND round = %s"


class TickCommitter:
    """The commits of one shard (``shard``) of the ledger at ``location``."""

    def __init__(self, pool: ConnectionPool[Any], shard: str, location: str, connect: dict[str, Any]) -> None:
        """``pool``: the store's blocking pool; ``connect``: how the event loop's connection connects
        (``psycopg.connect``'s arguments, the URL first as ``conninfo``)."""
        self.pool = pool
        self.shard = shard
        self.location = location
        self._connect = connect
        self._loop_pool: AsyncConnectionPool[Any] | None = None  # opened by the first asynchronous commit

    def commit(self, tick: TickWrite) -> float:
        """Commit ``tick`` on the blocking pool; the seconds it took."""
        started = time.perf_counter()
        retry = Reconnecting(self.location)
        while True:
            try:
                with (
                    self._losing_the_server_let_through(),
                    self.pool.connection() as conn,
                    conn.transaction(),
                    conn.pipeline(),
                ):
                    run_plan(conn, tick_plan(self.shard, tick))
                return time.perf_counter() - started
            except (psycopg.OperationalError, PoolTimeout) as exc:
                if tick.rounds and self._already_committed(tick.rounds[0]):
                    return time.perf_counter() - started
                time.sleep(retry.wait(exc))

    async def commit_async(self, tick: TickWrite) -> float:
        """Commit ``tick`` on the event loop's connection, the loop free during the round trips; the
        seconds it took."""
        started = time.perf_counter()
        retry = Reconnecting(self.location)
        pool = await self._opened_loop_pool()
        while True:
            try:
                with self._losing_the_server_let_through():
                    async with pool.connection() as conn, conn.transaction(), conn.pipeline():
                        await run_plan_async(conn, tick_plan(self.shard, tick))
                return time.perf_counter() - started
            except (psycopg.OperationalError, PoolTimeout) as exc:
                if tick.rounds and await self._already_committed_async(pool, tick.rounds[0]):
                    return time.perf_counter() - started
                await asyncio.sleep(retry.wait(exc))

    async def close_async(self) -> None:
        """Close the event loop's connection (before the loop ends; the blocking pool stays open)."""
        if self._loop_pool is not None:
            await self._loop_pool.close()
            self._loop_pool = None

    async def _opened_loop_pool(self) -> AsyncConnectionPool[Any]:
        if self._loop_pool is None:
            connect = dict(self._connect)
            self._loop_pool = AsyncConnectionPool(
                connect.pop("conninfo"),
                min_size=1,
                max_size=1,  # one commit at a time
                kwargs=connect,
                timeout=self.pool.timeout,
                open=False,
                name=f"commits-{self.shard}",
                configure=configure_async,
            )
            await self._loop_pool.open()  # connects in the background; the first commit waits for it
        return self._loop_pool

    @contextmanager
    def _losing_the_server_let_through(self) -> Iterator[None]:
        """psycopg's failures as one :class:`LedgerError` line, except losing the server (retried)."""
        try:
            yield
        except (FencedOut, psycopg.OperationalError, PoolTimeout):
            raise
        except psycopg.Error as exc:
            raise LedgerError(f"cannot write the ledger {self.location}: {first_line(exc)}") from None

    def _already_committed(self, record: RoundRecord) -> bool:
        try:
            with self.pool.connection() as conn:
                return conn.execute(HAS_ROUND, (record.market, record.result.round)).fetchone() is not None
        except (psycopg.Error, PoolTimeout):
            return False

    @staticmethod
    async def _already_committed_async(pool: AsyncConnectionPool[Any], record: RoundRecord) -> bool:
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute(HAS_ROUND, (record.market, record.result.round))
                return await cursor.fetchone() is not None
        except (psycopg.Error, PoolTimeout):
            return False


class Reconnecting:
    """How long a commit that lost the server waits before it tries again, and when it gives up."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.give_up = time.monotonic() + RECONNECT_SECONDS
        self.delay = 0.1

    def wait(self, exc: BaseException) -> float:
        """Seconds to wait before the next try after ``exc``; ``LedgerError`` once it is time to give up."""
        if time.monotonic() > self.give_up:
            raise LedgerError(f"cannot write the ledger {self.location}: {first_line(exc)}") from None
        log.warning("the ledger %s is unreachable (%s): retrying the commit", self.location, first_line(exc))
        delay, self.delay = self.delay, min(self.delay * 2, 1.0)
        return delay


async def configure_async(conn: psycopg.AsyncConnection[Any]) -> None:
    register_columns(conn.adapters)
